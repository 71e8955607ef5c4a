"""Copying a beton while adding fields: stored bytes are carried over verbatim."""
import numpy as np
import pytest
from ffcv.fields import NDArrayField
from ffcv.fields.basics import IntDecoder
from ffcv.fields.ndarray import NDArrayDecoder
from ffcv.loader import Loader, OrderOption

from conftest import write_tree
from fkd_ffcv.data.beton import Beton
from fkd_ffcv.data.copying import copy_beton


@pytest.fixture(scope='module')
def jpeg_beton(image_tree, tmp_path_factory):
    """Half the images JPEG, half raw (write mode 'proportion')."""
    path = tmp_path_factory.mktemp('copy') / 'src.beton'
    write_tree(image_tree, path, 'proportion')
    return path


def extra_values(n):
    rng = np.random.default_rng(0)
    return [(rng.random((3, 5)).astype(np.float32),) for _ in range(n)]


def test_copy_keeps_bytes_and_adds_a_field(jpeg_beton, tmp_path):
    src = Beton(jpeg_beton)
    values = extra_values(len(src))
    dst_path = tmp_path / 'dst.beton'
    report = copy_beton(jpeg_beton, dst_path, {'boxes': NDArrayField(np.dtype('float32'), (3, 5))},
                        values, num_workers=2, chunk_size=2, progress=False)
    dst = Beton(dst_path)
    assert report.num_samples == len(src) == len(dst)
    assert dst.field_names == ['image', 'label', 'path', 'boxes']
    src_meta, dst_meta = src.field_metadata('image'), dst.field_metadata('image')
    assert set(src_meta['mode'].tolist()) == {0, 1}  # both JPEG and raw samples are copied
    for i in range(len(src)):
        for col in ('mode', 'height', 'width'):
            assert src_meta[i][col] == dst_meta[i][col]
        assert src.read(int(src_meta[i]['data_ptr'])).tobytes() == \
            dst.read(int(dst_meta[i]['data_ptr'])).tobytes()
    assert dst.paths() == src.paths()
    assert np.array_equal(dst.field_metadata('label'), src.field_metadata('label'))
    assert dst.manifest.classes == src.manifest.classes
    assert dst.manifest.derived_from.fingerprint == src.fingerprint()

    loader = Loader(str(dst_path), batch_size=4, num_workers=1, order=OrderOption.SEQUENTIAL,
                    drop_last=False, pipelines={'image': None, 'path': None,
                                                'label': [IntDecoder()],
                                                'boxes': [NDArrayDecoder()]})
    boxes = np.concatenate([b.copy() for _, b in loader])
    assert np.array_equal(boxes, np.stack([v[0] for v in values]))


def test_copy_in_place_and_field_selection(jpeg_beton, tmp_path):
    path = tmp_path / 'inplace.beton'
    copy_beton(jpeg_beton, path, progress=False)
    before = Beton(path).paths()
    copy_beton(path, path, {'extra': NDArrayField(np.dtype('float32'), (3, 5))},
               extra_values(len(before)), progress=False)
    assert Beton(path).field_names == ['image', 'label', 'path', 'extra']
    copy_beton(path, path, keep=['image', 'label', 'path'], progress=False)  # drop 'extra'
    assert Beton(path).field_names == ['image', 'label', 'path']
    assert Beton(path).paths() == before


def test_copy_rejects_bad_requests(jpeg_beton, tmp_path):
    n = len(Beton(jpeg_beton))
    field = {'label': NDArrayField(np.dtype('float32'), (3, 5))}
    with pytest.raises(ValueError, match="already has field"):
        copy_beton(jpeg_beton, tmp_path / 'x.beton', field, extra_values(n))
    with pytest.raises(ValueError, match=f"2 values for {n} samples"):
        copy_beton(jpeg_beton, tmp_path / 'x.beton', {'new': field['label']}, extra_values(2))
    with pytest.raises(KeyError, match="no field 'nope'"):
        copy_beton(jpeg_beton, tmp_path / 'x.beton', keep=['nope'])
    with pytest.raises(FileNotFoundError, match='no such beton'):
        copy_beton(tmp_path / 'missing.beton', tmp_path / 'x.beton')
    (tmp_path / 'junk.beton').write_bytes(b'\0' * 10)
    with pytest.raises(ValueError, match=r"junk.beton is not an FFCV beton \(10 bytes, shorter "
                                         r"than a beton.s 24-byte header\)"):
        copy_beton(tmp_path / 'junk.beton', tmp_path / 'x.beton')
