"""Image decoding rules, ImageFolder listing and Fashion-MNIST reading (no writer processes)."""
import gzip
import os
from unittest import mock

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import save, smooth_image
from fkd_ffcv.data.sources import (FashionMNISTSource, ImageFolderSource, load_rgb, read_idx,
                              subset_indices)
from fkd_ffcv.data.sources import BadSample


def test_rgb_jpeg_and_png_are_read_as_uint8_rgb(tmp_path):
    pixels = smooth_image(1, 30, 40)
    assert np.array_equal(load_rgb(save(tmp_path / 'a.png', pixels)), pixels)
    got = load_rgb(save(tmp_path / 'a.jpg', pixels, quality=95))
    assert got.shape == (30, 40, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - pixels).mean() < 3


def test_greyscale_and_one_bit_become_three_equal_channels(tmp_path):
    grey = smooth_image(2, 20, 25)[:, :, 0]
    got = load_rgb(save(tmp_path / 'g.png', grey))
    assert np.array_equal(got, np.repeat(grey[:, :, None], 3, axis=2))
    bits = Image.fromarray(grey > 128).convert('1')
    got = load_rgb(save(tmp_path / 'b.png', np.array(bits)))
    assert set(np.unique(got)) <= {0, 255} and np.array_equal(got[..., 0], got[..., 2])


def test_cmyk_jpeg_is_converted(tmp_path):
    pixels = smooth_image(3, 24, 24)
    Image.fromarray(pixels).convert('CMYK').save(tmp_path / 'c.jpg', quality=95)
    assert Image.open(tmp_path / 'c.jpg').mode == 'CMYK'
    got = load_rgb(tmp_path / 'c.jpg')
    assert got.shape == (24, 24, 3) and np.abs(got.astype(int) - pixels).mean() < 6


def test_palette_and_alpha_are_composited_over_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255     # top half opaque red-ish, bottom half fully transparent
    got = load_rgb(save(tmp_path / 'a.png', rgba))
    assert np.array_equal(got[0, 0], [200, 0, 0]) and np.array_equal(got[9, 9], [255, 255, 255])

    palette = Image.fromarray(smooth_image(4, 16, 16)).convert('P')
    palette.save(tmp_path / 'p.png')
    assert np.array_equal(load_rgb(tmp_path / 'p.png'), np.asarray(palette.convert('RGB')))
    palette.info['transparency'] = 0
    palette.save(tmp_path / 't.png', transparency=0)
    got = load_rgb(tmp_path / 't.png')
    index = np.asarray(palette)
    assert (got[index == 0] == 255).all()


def test_sixteen_bit_png_keeps_top_byte(tmp_path):
    grey16 = (np.arange(12 * 9, dtype=np.uint16).reshape(12, 9) * 600)
    save(tmp_path / 'g16.png', grey16)
    assert np.array_equal(load_rgb(tmp_path / 'g16.png')[..., 1], (grey16 >> 8).astype(np.uint8))
    rgb16 = np.random.default_rng(0).integers(0, 65535, (6, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / 'c16.png'), rgb16[..., ::-1])  # cv2 writes BGR
    assert np.array_equal(load_rgb(tmp_path / 'c16.png'), (rgb16 >> 8).astype(np.uint8))


def test_tiny_and_large_images(tmp_path):
    one = np.array([[[10, 20, 30]]], np.uint8)
    assert np.array_equal(load_rgb(save(tmp_path / 'one.png', one)), one)
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, :2000] = 255
    path = save(tmp_path / 'big.jpg', big, quality=80)
    # DCT-domain downscale: 4000 px decoded at 1/4 still covers max_resolution 900
    got = load_rgb(path, max_resolution=900)
    assert got.shape == (750, 1000, 3)
    assert np.array_equal(load_rgb(path).shape, (3000, 4000, 3))
    with pytest.raises(BadSample, match='over the limit'):
        load_rgb(path, max_pixels=1_000_000)


@pytest.mark.parametrize('make, reason', [
    (lambda p: p.write_bytes(b'hello, not an image'), 'cannot decode'),
    (lambda p: p.write_bytes(b''), 'empty file'),
    (lambda p: p.write_bytes(b'\xff\xd8\xff\xe0' + bytes(range(256)) * 8), 'cannot decode'),
    (lambda p: os.symlink(p.parent / 'nowhere.jpg', p), 'broken symbolic link'),
    (lambda p: os.mkfifo(p), 'not a regular file'),   # opening a FIFO would block forever
])
def test_unusable_files_raise_bad_sample(tmp_path, make, reason):
    path = tmp_path / 'x.jpg'
    make(path)
    with pytest.raises(BadSample, match=reason):
        load_rgb(path)


def test_truncated_jpeg_raises_bad_sample(tmp_path):
    data = (save(tmp_path / 'ok.jpg', smooth_image(5, 64, 64))).read_bytes()
    (tmp_path / 'cut.jpg').write_bytes(data[:len(data) // 2])
    with pytest.raises(BadSample, match='(?i)truncated'):
        load_rgb(tmp_path / 'cut.jpg')


def test_unreadable_file_raises_bad_sample(tmp_path):
    path = save(tmp_path / 'locked.png', smooth_image(6, 8, 8))
    # Tests run as root, whom file modes do not stop: refuse the open itself.
    denied = PermissionError(13, 'Permission denied')
    with mock.patch('PIL.Image.open', side_effect=denied):
        with pytest.raises(BadSample, match='not readable'):
            load_rgb(path)


def test_image_folder_order_labels_and_ignored_files(image_tree):
    root, classes, expected = image_tree
    source = ImageFolderSource(root, 'train')
    assert source.classes == classes
    assert [(rel, label) for rel, label, _ in expected['train']] == source.samples
    assert source.ignored == 1 and source.empty_classes == []
    pixels, label, path = source[len(source) - 1]
    assert os.fsdecode(path.tobytes()) == expected['train'][-1][0]
    assert np.array_equal(pixels, expected['train'][-1][2])


def test_image_folder_uses_train_classes_for_every_split(tmp_path):
    for split, names in (('train', ['a', 'b', 'c']), ('val', ['c'])):
        for name in names:
            save(tmp_path / split / name / 'x.png', smooth_image(7, 4, 4))
    (tmp_path / 'train' / 'd').mkdir()  # empty class keeps its index
    val = ImageFolderSource(tmp_path, 'val')
    assert val.classes == ['a', 'b', 'c', 'd'] and val.samples == [('val/c/x.png', 2)]
    assert val.empty_classes == ['a', 'b', 'd']
    save(tmp_path / 'val' / 'zebra' / 'x.png', smooth_image(7, 4, 4))
    with pytest.raises(ValueError, match='zebra'):
        ImageFolderSource(tmp_path, 'val')
    with pytest.raises(FileNotFoundError, match='no such directory'):
        ImageFolderSource(tmp_path, 'test')


def test_subset_spreads_over_the_whole_list():
    assert subset_indices(10, -1).tolist() == list(range(10))
    assert subset_indices(10, 3).tolist() == [0, 4, 9] or subset_indices(10, 3).tolist() == [0, 5, 9]
    assert len(subset_indices(1000, 100)) == 100
    with pytest.raises(ValueError):
        subset_indices(10, 0)


def test_fashion_mnist_source():
    source = FashionMNISTSource('val', image_size=32, subset=50)
    assert len(source) == 50 and len(source.classes) == 10
    pixels, label, path = source[3]
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8 and 0 <= label < 10
    assert path.tobytes().startswith(b'val/')
    native = FashionMNISTSource('train', image_size=28, subset=5)[0][0]
    assert np.array_equal(native[..., 0], native[..., 2])
    with pytest.raises(ValueError, match='split'):
        FashionMNISTSource('test')


def test_idx_reader_rejects_bad_files(tmp_path):
    with gzip.open(tmp_path / 'cut.gz', 'wb') as f:
        f.write(b'\0\0\x08\x03' + (100).to_bytes(4, 'big') + (28).to_bytes(4, 'big') * 2 + b'x')
    with pytest.raises(ValueError, match='truncated'):
        read_idx(tmp_path / 'cut.gz')
    (tmp_path / 'junk').write_bytes(b'PK\x03\x04')
    with pytest.raises(ValueError, match='IDX'):
        read_idx(tmp_path / 'junk')
    with pytest.raises(FileNotFoundError, match='dataset-fashion-mnist'):
        FashionMNISTSource('train', root=tmp_path)


def test_thirty_two_bit_and_transparent_colour_images(tmp_path):
    Image.fromarray(np.full((4, 4), 200, np.int32), mode='I').save(tmp_path / 'i.tif')
    assert (load_rgb(tmp_path / 'i.tif') == 200).all()  # as Pillow's own conversion gives
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / 't.png', transparency=(0, 0, 0))
    got = load_rgb(tmp_path / 't.png')
    assert np.array_equal(got[0, 0], [10, 20, 30]) and (got[1:, 1:] == 255).all()


def test_hidden_class_folders_count_as_torchvision_counts_them(tmp_path):
    for name in ('.hidden', 'a'):
        save(tmp_path / 'train' / name / 'x.png', smooth_image(8, 4, 4))
    assert ImageFolderSource(tmp_path, 'train').classes == ['.hidden', 'a']


def test_unlistable_folder_is_an_error(tmp_path, monkeypatch):
    save(tmp_path / 'train' / 'a' / 'x.png', smooth_image(8, 4, 4))
    real_walk = os.walk

    def walk(top, onerror=None, **kwargs):
        onerror(PermissionError(13, 'Permission denied', str(top)))
        return real_walk(top, **kwargs)

    monkeypatch.setattr(os, 'walk', walk)
    with pytest.raises(OSError, match='cannot list .*/train/a: Permission denied'):
        ImageFolderSource(tmp_path, 'train')
