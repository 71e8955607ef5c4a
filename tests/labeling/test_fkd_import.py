"""Import of FKD's per-image soft-label files into record fields."""
import os
import pickle

import numpy as np
import pytest
import torch

from fkd_ffcv.data.beton import Beton
from fkd_ffcv.records.crops import BOX_UNITS
from fkd_ffcv.data.fields import SOFT_LABEL_FIELDS
from fkd_ffcv.labeling.fkd_import import fkd_label_path, import_fkd_labels, read_fkd_file
from fkd_ffcv.records.soft_labels import FLAG_FLIP, FLAG_P1_STORED, decode_probs
from fkd_ffcv.data.safe_write import WriteError
from fkd_ffcv.data.sources import BadSample

N, K = 10, 2


@pytest.fixture(scope='module')
def images(raw_tree_beton):
    return raw_tree_beton[0]


def fkd_state(label, rng, agree=True, kind='marginal'):
    """One image's FKD record list as FKD's generator saves it (numpy arrays, fp16 coords)."""
    h, w = rng.uniform(0.2, 0.9, (2, N))
    coords = np.stack([rng.uniform(0, 1 - h), rng.uniform(0, 1 - w), h, w], 1).astype(np.float16)
    flips = rng.random(N) < 0.5
    probs = np.sort(rng.dirichlet(np.ones(K + 1), N)[:, :K], axis=1)[:, ::-1]
    indices = np.array([[label, (label + 1) % 3] if agree else [(label + 1) % 3, label]
                        for _ in range(N)], np.float32)
    if kind == 'hard':
        labels = indices[:, 0].astype(np.int64)
    else:
        labels = np.stack([indices, probs.astype(np.float32)], axis=1)
    return [coords, flips, labels]


def make_tree(root, beton, rng, **kwargs):
    states = []
    b = Beton(beton)
    for rel, label in zip(b.paths(), b.field_metadata('label')):
        path = fkd_label_path(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = fkd_state(int(label), rng, agree=len(states) % 4 != 0, **kwargs)
        torch.save(state, path)
        states.append(state)
    return states


def test_import_reproduces_the_records(images, tmp_path):
    states = make_tree(tmp_path / 'fkd', images, np.random.default_rng(0))
    report = import_fkd_labels(images, tmp_path / 'out.beton', tmp_path / 'fkd', progress=False)
    beton = Beton(tmp_path / 'out.beton')
    assert report.num_samples == len(states) and report.extra_files == []
    assert report.top1_agreement == pytest.approx(9 / 12)  # every 4th image disagrees
    info = beton.manifest.soft_labels
    assert info.label_type == f'marginal_smoothing_k{K}' and info.num_records == N
    assert info.crop_resize == 'antialias'  # FKD's crops: torchvision on PIL images
    for i, (coords, flips, labels) in enumerate(states):
        read = {n: np.array(beton.array(n, i)) for n in SOFT_LABEL_FIELDS}
        assert np.array_equal(read['fkd_boxes'], np.round(coords.astype(np.float64) * BOX_UNITS))
        assert np.array_equal(read['fkd_flags'] & FLAG_FLIP, flips)
        assert np.array_equal(read['fkd_classes'], labels[:, 0])
        probs = decode_probs(torch.from_numpy(read['fkd_codes']),
                             torch.from_numpy(read['fkd_flags'] & FLAG_P1_STORED > 0))
        # each stored value within 2.8%; the derived one (p_1 or the rest) within 2.8% of the rest
        assert np.allclose(probs.numpy(), labels[:, 1], rtol=0.06, atol=1e-6)


def test_hard_labels_import(images, tmp_path):
    make_tree(tmp_path / 'fkd', images, np.random.default_rng(1), kind='hard')
    import_fkd_labels(images, tmp_path / 'out.beton', tmp_path / 'fkd', progress=False)
    assert Beton(tmp_path / 'out.beton').manifest.soft_labels.label_type == 'hard'


def test_missing_extra_and_malformed_files(images, tmp_path):
    root = tmp_path / 'fkd'
    make_tree(root, images, np.random.default_rng(2))
    paths = Beton(images).paths()
    os.remove(fkd_label_path(root, paths[3]))
    (root / 'train' / 'cat' / 'stranger.tar').write_bytes(b'x')
    with pytest.raises(FileNotFoundError, match='1 of 12 samples have no soft-label file'):
        import_fkd_labels(images, tmp_path / 'out.beton', root, progress=False)
    report = import_fkd_labels(images, tmp_path / 'out.beton', root, on_error='skip',
                               progress=False)
    assert report.num_samples == 11 and paths[3] not in Beton(tmp_path / 'out.beton').paths()
    assert [why for _, why in report.skipped] == [f"{fkd_label_path(root, paths[3])}: "
                                                  f"soft-label file missing"]
    assert report.extra_files == [str(root / 'train' / 'cat' / 'stranger.tar')]

    torch.save(fkd_state(0, np.random.default_rng(4)), fkd_label_path(root, paths[3]))
    torch.save([np.zeros((N, 4), np.float32), np.zeros(N, bool),
                np.full((N, 2, K), 7, np.float32)], fkd_label_path(root, paths[5]))
    with pytest.raises(WriteError, match=r'cat/img1.tar: class indices outside 0..2'):
        import_fkd_labels(images, tmp_path / 'out2.beton', root, progress=False)
    assert not (tmp_path / 'out2.beton').exists()


def test_only_arrays_are_unpickled(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f'touch {tmp_path}/pwned',))

    with open(tmp_path / 'evil.tar', 'wb') as f:
        pickle.dump([Exploit()], f)
    torch.save({'not': 'a list'}, tmp_path / 'dict.tar')
    for name in ('evil.tar', 'dict.tar'):
        with pytest.raises(BadSample):
            read_fkd_file(tmp_path / name)
    assert not (tmp_path / 'pwned').exists()


def test_a_tree_one_level_too_high_gets_a_hint(images, tmp_path):
    make_tree(tmp_path / 'release' / 'imagenet', images, np.random.default_rng(3))
    with pytest.raises(FileNotFoundError, match=f"did you mean {tmp_path}/release/imagenet"):
        import_fkd_labels(images, tmp_path / 'out.beton', tmp_path / 'release', progress=False)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no FKD soft-label files'):
        import_fkd_labels(images, tmp_path / 'out.beton', tmp_path / 'empty', progress=False)


def test_every_record_by_default_and_the_files_must_agree(images, tmp_path):
    """The import takes every record the files hold (no default N to fall short of); files
    with other counts are refused, naming --labels.num_records, which takes the first N."""
    root = tmp_path / 'fkd'
    make_tree(root, images, np.random.default_rng(5))
    paths = Beton(images).paths()
    first = fkd_label_path(root, paths[0])
    short = fkd_label_path(root, paths[4])
    torch.save([a[:N - 3] for a in torch.load(short, weights_only=False)], short)
    with pytest.raises(WriteError, match=f"{N - 3} records, but {first} has {N}: the files must "
                                         f"agree, or --labels.num_records=<m> takes the first m"):
        import_fkd_labels(images, tmp_path / 'out.beton', root, progress=False)
    import_fkd_labels(images, tmp_path / 'out.beton', root, num_records=N - 3, progress=False)
    assert Beton(tmp_path / 'out.beton').manifest.soft_labels.num_records == N - 3
    with pytest.raises(ValueError, match=f"--labels.num_records=500: the FKD files hold {N} "
                                         f"records per image"):
        import_fkd_labels(images, tmp_path / 'out2.beton', root, num_records=500, progress=False)
    with pytest.raises(WriteError, match=f"{N - 3} records, fewer than "
                                         f"--labels.num_records={N - 1}"):
        import_fkd_labels(images, tmp_path / 'out2.beton', root, num_records=N - 1,
                          progress=False)
