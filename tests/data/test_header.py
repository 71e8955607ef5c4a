"""header.py: a beton's header checked with numpy alone, as FFCV's reader lays it out."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from fkd_ffcv.errors import DataError
from fkd_ffcv.data import header
from fkd_ffcv.data.header import check_beton


def test_the_layout_is_ffcvs(raw_tree_beton, labelled_jpeg_beton):
    from ffcv.reader import Reader
    from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, FieldDescType, HeaderType
    assert (header.HEADER, header.DESCRIPTOR, header.ALLOCATION, header.VERSION) == \
        (HeaderType, FieldDescType, ALLOC_TABLE_TYPE, CURRENT_VERSION)
    for path in (raw_tree_beton[0], labelled_jpeg_beton):
        reader = Reader(str(path))
        found = check_beton(path)
        assert (found.num_samples, found.page_size) == (reader.num_samples, reader.page_size)
        # the file ends exactly where the metadata types of header.py put the table's end
        assert found.size == int(reader.header['alloc_table_ptr']) + reader.alloc_table.nbytes


def test_a_manifest_a_text_file_and_a_truncated_beton_are_named(raw_tree_beton, tmp_path):
    path = raw_tree_beton[0]
    with pytest.raises(DataError, match=rf"^{path}.json is not an FFCV beton \(it is a JSON "
                                        rf"file; {path} is the beton it describes\)$"):
        check_beton(f'{path}.json')
    (tmp_path / 'notes.beton').write_text('some words, long enough for a header')
    with pytest.raises(DataError, match=r"notes.beton is not an FFCV beton \(format version "):
        check_beton(tmp_path / 'notes.beton')
    data = path.read_bytes()
    table = int(np.frombuffer(data[:24], header.HEADER)[0]['alloc_table_ptr'])
    # cut before the field names: the fix cannot tell whether the beton was labelled
    for keep, of, again in ((30, f'at least {table:,}', r'write \(or label\) it again'),
                            (2000, f'at least {table:,}', r'write \(or label\) it again'),
                            (len(data) // 2, f'{len(data):,}', 'write it again'),
                            (len(data) - 1, f'{len(data):,}', 'write it again')):
        (tmp_path / 'cut.beton').write_bytes(data[:keep])
        with pytest.raises(DataError, match=rf"cut.beton is truncated: {keep:,} bytes of "
                                            rf"{of} \({again}\)$"):
            check_beton(tmp_path / 'cut.beton')
    with pytest.raises(FileNotFoundError, match='no such beton file'):
        check_beton(tmp_path / 'missing.beton')


def test_a_truncated_labelled_beton_says_write_or_label_it_again(labelled_jpeg_beton,
                                                                   tmp_path):
    data = labelled_jpeg_beton.read_bytes()
    (tmp_path / 'cut_fkd.beton').write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=rf"cut_fkd.beton is truncated: {len(data) // 2:,} bytes "
                                        rf"of {len(data):,} \(write or label it again\)$"):
        check_beton(tmp_path / 'cut_fkd.beton')


def test_the_check_loads_neither_torch_nor_ffcv(raw_tree_beton):
    code = (f"import sys; from fkd_ffcv.data.header import check_beton; "
            f"check_beton({str(raw_tree_beton[0])!r}); "
            f"print(sorted(m for m in ('torch', 'ffcv', 'numba') if m in sys.modules))")
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[]'
