"""manifest.py: the typed manifest reads what earlier code wrote and writes it back unchanged."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from fkd_ffcv.data.manifest import (MANIFEST_FORMAT, Manifest, Origin, Records, manifest_path,
                                    read_manifest)

# Written by the code before the manifest was typed (branch `layout`, fkd-write on a folder
# with one corrupt image, then labelled with soft labels and with embeddings).
WRITTEN = Path(__file__).parents[1] / 'manifests'


@pytest.mark.parametrize('name', ['written', 'labelled', 'embeddings'])
def test_manifests_written_before_read_back_and_write_back_unchanged(name, tmp_path):
    beton = tmp_path / f'{name}.beton'
    shutil.copy(WRITTEN / f'{name}.beton.json', manifest_path(beton))
    before = json.loads(manifest_path(beton).read_text())
    manifest = Manifest.read(beton, before['fingerprint'])
    assert manifest.unknown == {}  # every key it holds is a typed field
    manifest.write(beton)
    after = json.loads(manifest_path(beton).read_text())
    assert after == before and list(after) == list(before)


def test_the_fields_say_what_the_keys_held():
    written = Manifest.read(WRITTEN / 'written.beton')
    assert written.classes == ['a', 'b', 'c'] and written.source['split'] == 'train'
    assert written.skipped[0][0] == 'tree/train/a/bad.png' and written.derived_from is None
    labelled = Manifest.read(WRITTEN / 'labelled.beton')
    info = labelled.soft_labels
    assert (info.label_type, info.k, info.num_records, info.bytes_per_record) == \
        ('marginal_smoothing_k2', 2, 4, 9 + 3 * 2)
    assert labelled.embeddings is None and labelled.records('fkd_classes') is info
    assert isinstance(labelled.derived_from, Origin)
    assert labelled.derived_from.added_fields[0] == 'fkd_boxes'
    embedded = Manifest.read(WRITTEN / 'embeddings.beton')
    assert embedded.records('fkd_embedding').dim == 512


def test_unknown_keys_are_carried_and_unset_facts_not_written(tmp_path):
    manifest = Manifest(classes=['x'], soft_labels=Records(num_records=3),
                        unknown={'note': 'kept'})
    manifest.write(tmp_path / 'a.beton')
    entries = json.loads(manifest_path(tmp_path / 'a.beton').read_text())
    assert entries == {'format': MANIFEST_FORMAT, 'classes': ['x'],
                       'soft_labels': {'num_records': 3}, 'note': 'kept'}
    assert Manifest.read(tmp_path / 'a.beton') == manifest


def test_a_missing_unreadable_or_stale_manifest_is_named(tmp_path):
    beton = tmp_path / 'x.beton'
    with pytest.raises(FileNotFoundError, match=r"x.beton.json: manifest missing"):
        Manifest.read(beton)
    manifest_path(beton).write_text('{not json')
    with pytest.raises(ValueError, match=r"x.beton.json: not JSON"):
        Manifest.read(beton)
    manifest_path(beton).write_text('{"format": "other"}')
    with pytest.raises(ValueError, match=rf"x.beton.json: not a '{MANIFEST_FORMAT}' file"):
        Manifest.read(beton)
    Manifest(fingerprint='abc').write(beton)
    with pytest.raises(ValueError, match='fingerprints differ'):
        Manifest.read(beton, 'def')
    assert Manifest.read(beton, 'abc').fingerprint == 'abc'
    assert read_manifest(tmp_path / 'none.beton') == Manifest()  # the option checks' peek


def test_the_manifest_loads_neither_torch_nor_ffcv():
    code = ("import sys, fkd_ffcv.data.manifest; "
            "print(sorted(m for m in ('torch', 'ffcv', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == '[]'
