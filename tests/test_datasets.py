import re
import shutil
from pathlib import Path

import pytest
from fakedata import write_custom, write_duke, write_jpeg, write_market, write_msmt17

from reidmodel.data import DatasetError, ImageRecord, load_dataset, relabel, resolve_dataset


def _names_and_labels(records):
    return sorted((Path(r.path).name, r.pid, r.camid) for r in records)


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_market_records(tmp_path):
    folder = write_market(tmp_path)
    dataset = load_dataset(folder)
    assert dataset.name == "market1501"
    assert dataset.root == str(folder)
    # Train: junk and the distractor dropped; pids 2, 7, 10 relabelled 0, 1, 2; c1 -> camid 0.
    assert _names_and_labels(dataset.train) == [
        ("0002_c1s1_000451_03.jpg", 0, 0),
        ("0002_c1s1_000551_01.jpg", 0, 0),
        ("0002_c2s1_000301_01.jpg", 0, 1),
        ("0007_c3s1_000101_01.jpg", 1, 2),
        ("0007_c3s2_000201_01.jpg", 1, 2),
        ("0010_c6s1_000101_01.jpg", 2, 5),
    ]
    assert _names_and_labels(dataset.query) == [("0002_c4s1_000001_00.jpg", 2, 3), ("0007_c5s1_000001_00.jpg", 7, 4)]
    # Gallery keeps original pids and the distractor (pid 0); junk and Thumbs.db are gone.
    assert _names_and_labels(dataset.gallery) == [
        ("0000_c6s1_000001_00.jpg", 0, 5),
        ("0002_c1s1_000002_00.jpg", 2, 0),
        ("0007_c3s1_000002_00.jpg", 7, 2),
        ("0015_c5s1_000001_00.jpg", 15, 4),
    ]
    assert (dataset.num_train_pids, dataset.num_train_cams) == (3, 4)
    assert (dataset.num_query_pids, dataset.num_query_cams) == (2, 2)
    assert (dataset.num_gallery_pids, dataset.num_gallery_cams) == (4, 4)
    assert all(Path(r.path).is_file() for r in dataset.train + dataset.query + dataset.gallery)


def test_market_found_under_root_and_summary(tmp_path):
    write_market(tmp_path)
    dataset = load_dataset(tmp_path, format="market")
    lines = dataset.summary().splitlines()
    assert lines[0].startswith("=> Loaded market1501")
    assert re.split(r"\s*\|\s*", lines[2].strip()) == ["subset", "# ids", "# images", "# cameras"]
    rows = {line.split("|")[0].strip(): [int(x) for x in line.split("|")[1:]] for line in lines[4:7]}
    assert rows == {"train": [3, 6, 4], "query": [2, 2, 2], "gallery": [4, 4, 4]}
    assert load_dataset(tmp_path).name == "market1501"  # auto finds the standard folder too


def test_duke_records(tmp_path):
    dataset = load_dataset(write_duke(tmp_path))
    assert dataset.name == "dukemtmc"
    assert _names_and_labels(dataset.train) == [
        ("0001_c2_f0000001.jpg", 0, 1),
        ("0001_c8_f0000002.jpg", 0, 7),
        ("0005_c7_f0000003.jpg", 1, 6),
    ]
    assert _names_and_labels(dataset.gallery) == [
        ("0001_c5_f0000020.jpg", 1, 4),
        ("0005_c8_f0000021.jpg", 5, 7),
        ("0009_c4_f0000022.jpg", 9, 3),
    ]
    assert len(dataset.query) == 2


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_msmt17_records(tmp_path, version):
    folder = write_msmt17(tmp_path, version)
    dataset = load_dataset(folder)
    assert dataset.name == "msmt17"
    train_dir = "train" if version == "V1" else "mask_train_v2"
    # list_train + list_val; pids 0, 1, 3 -> 0, 1, 2; camera field 15 -> camid 14.
    assert _names_and_labels(dataset.train) == [
        ("0000_000_01_0303morning_0015_0.jpg", 0, 0),
        ("0000_001_15_0303morning_0016_0.jpg", 0, 14),
        ("0001_000_02_0303morning_0100_0.jpg", 1, 1),
        ("0003_000_07_0303noon_0001_0.jpg", 2, 6),
    ]
    assert all(Path(r.path).parent.parent.name == train_dir for r in dataset.train)
    # pid 0 is a real MSMT17 identity, so it is kept in query and gallery.
    assert [(r.pid, r.camid) for r in dataset.query] == [(0, 2), (2, 3)]
    assert [(r.pid, r.camid) for r in dataset.gallery] == [(0, 4), (2, 14), (4, 0)]
    assert all(Path(r.path).is_file() for r in dataset.train + dataset.query + dataset.gallery)


def test_custom_and_auto_detection(tmp_path):
    folder = write_custom(tmp_path)
    dataset = load_dataset(folder)
    assert dataset.name == "synthetic_market"
    assert _names_and_labels(dataset.train) == [
        ("0001_c12_000002.jpg", 0, 11),
        ("0001_c1_000001.jpg", 0, 0),
        ("0003_c9_000003.jpg", 1, 8),
        ("0003_c9_000004.jpg", 1, 8),
    ]
    assert [r.pid for r in dataset.gallery] == [0, 1, 3]
    # A renamed standard dataset is custom under auto (named after its folder), the format given wins.
    shutil.move(write_market(tmp_path / "a"), tmp_path / "market_copy")
    assert load_dataset(tmp_path / "market_copy").name == "market_copy"
    assert load_dataset(tmp_path / "market_copy", format="market").name == "market1501"
    assert load_dataset(tmp_path / "market_copy", name="source").name == "source"


def test_resolve_dataset(tmp_path):
    write_market(tmp_path)
    write_duke(tmp_path)
    write_msmt17(tmp_path, "V2")
    write_custom(tmp_path, "synthetic_duke")
    assert resolve_dataset("market1501", tmp_path).num_train_pids == 3
    assert resolve_dataset("dukemtmc", tmp_path).name == "dukemtmc"
    assert len(resolve_dataset("msmt17", tmp_path).train) == 4
    custom = resolve_dataset("synthetic_duke", tmp_path)
    assert (custom.name, custom.num_train_cams) == ("synthetic_duke", 3)
    shutil.move(tmp_path / "Market-1501-v15.09.15", tmp_path / "Market-1501")
    assert resolve_dataset("market1501", tmp_path).name == "market1501"


def test_relabel_is_sorted_by_original_pid():
    records = [ImageRecord("a", 40, 0), ImageRecord("b", 3, 1), ImageRecord("c", 40, 2), ImageRecord("d", 17, 0)]
    assert [r.pid for r in relabel(records)] == [2, 0, 2, 1]


def test_missing_folder_lists_layout(tmp_path):
    message = _error(load_dataset, tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in message and "bounding_box_train" in message and "list_train.txt" in message
    message = _error(load_dataset, tmp_path)  # exists but is no dataset
    assert "not a re-ID dataset folder" in message and "bounding_box_test" in message


def test_missing_split(tmp_path):
    folder = write_market(tmp_path)
    shutil.rmtree(folder / "query")
    message = _error(load_dataset, folder)
    assert f"split folder {folder / 'query'} is missing" in message


def test_empty_split(tmp_path):
    folder = write_duke(tmp_path)
    for file in (folder / "bounding_box_test").iterdir():
        file.unlink()
    message = _error(load_dataset, folder)
    assert f"{folder / 'bounding_box_test'} has no images" in message


def test_unparsable_names_are_named(tmp_path):
    folder = write_custom(tmp_path)
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        write_jpeg(folder / "query" / name)
    message = _error(load_dataset, folder)
    assert "4 file name(s)" in message and str(folder / "query") in message
    assert "a.jpg, b.jpg, c.jpg;" in message and "d.jpg" not in message


def test_corrupt_image_with_verify(tmp_path):
    folder = write_market(tmp_path)
    bad = folder / "query" / "0002_c1s1_000009_00.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    assert len(load_dataset(folder).query) == 3  # parsing alone does not decode
    message = _error(load_dataset, folder, verify_images=True)
    assert f"cannot decode image {bad}" in message


@pytest.mark.parametrize(
    ("writer", "split", "name", "expected"),
    [
        (write_market, "query", "0002_c7s1_000001_00.jpg", "camera 7 in {} is out of range for market1501 (cameras 1-6)"),
        (write_duke, "bounding_box_train", "0001_c9_f0000001.jpg", "camera 9 in {} is out of range for dukemtmc"),
        (write_custom, "bounding_box_test", "0001_c0_000001.jpg", "camera 0 in {} is out of range for custom"),
    ],
)
def test_camera_out_of_range(tmp_path, writer, split, name, expected):
    folder = writer(tmp_path)
    write_jpeg(folder / split / name)
    message = _error(load_dataset, folder)
    assert expected.format(folder / split / name) in message


def test_msmt17_bad_lists(tmp_path):
    folder = write_msmt17(tmp_path)
    gallery = folder / "list_gallery.txt"
    gallery.write_text(gallery.read_text() + "0005/0005_000_16_0303noon_0001_0.jpg 5\n")
    assert "camera 16 in " + f"{gallery} line 4 is out of range for msmt17" in _error(load_dataset, folder)
    gallery.write_text("0005/0005_000_01_0303noon_0001_0.jpg\n")
    assert f"{gallery} line 1 does not parse" in _error(load_dataset, folder)
    gallery.unlink()
    assert f"list file {gallery} is missing" in _error(load_dataset, folder)
    shutil.rmtree(folder / "train")
    assert "has no image folders" in _error(load_dataset, folder)


def test_resolve_errors(tmp_path):
    write_duke(tmp_path)
    message = _error(resolve_dataset, "market1501", tmp_path)
    assert "Market-1501-v15.09.15/" in message and "found: DukeMTMC-reID" in message
    message = _error(resolve_dataset, "synthetic_market", tmp_path)
    assert f"unknown dataset 'synthetic_market' under {tmp_path}" in message and "found: DukeMTMC-reID" in message
    assert "data.root" in _error(resolve_dataset, "dukemtmc", tmp_path / "missing")


def test_ambiguous_root_and_bad_format(tmp_path):
    write_market(tmp_path)
    write_duke(tmp_path)
    assert "holds several datasets" in _error(load_dataset, tmp_path)
    assert load_dataset(tmp_path, format="duke").name == "dukemtmc"
    assert "unknown dataset format 'cuhk03'" in _error(load_dataset, tmp_path, format="cuhk03")


def test_incomplete_standard_folder_is_named(tmp_path):
    folder = write_market(tmp_path)
    shutil.rmtree(folder / "bounding_box_train")
    for fmt in ("auto", "market"):
        assert f"split folder {folder / 'bounding_box_train'} is missing" in _error(load_dataset, tmp_path, fmt)
    shutil.rmtree(folder)
    (tmp_path / "MSMT17_V1" / "train").mkdir(parents=True)
    message = _error(load_dataset, tmp_path)
    assert f"list file {tmp_path / 'MSMT17_V1' / 'list_train.txt'} is missing" in message


def test_msmt17_versions_side_by_side(tmp_path):
    write_msmt17(tmp_path, "V1")
    write_msmt17(tmp_path, "V2")
    assert load_dataset(tmp_path, format="msmt17").root == str(tmp_path / "MSMT17_V1")
    assert "holds several datasets (MSMT17_V1, MSMT17_V2)" in _error(load_dataset, tmp_path)
