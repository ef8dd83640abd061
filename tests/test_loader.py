from collections import Counter

import pytest
import torch
from fakedata import write_jpeg

from reidmodel.config import DataConfig
from reidmodel.data import (
    DatasetError,
    ImageDataset,
    ImageRecord,
    build_test_loader,
    build_test_transform,
    build_train_loader,
    load_images,
    read_image,
)

COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (128, 128, 128)]


def _records(tmp_path, pids, colours=None):
    records = []
    for i, pid in enumerate(pids):
        colour = (colours or COLOURS)[i % len(colours or COLOURS)]
        path = write_jpeg(tmp_path / f"{i:04d}.jpg", colour, size=(4, 8))
        records.append(ImageRecord(str(path), pid, i % 3))
    return records


def _cfg(**overrides) -> DataConfig:
    values = dict(height=16, width=8, batch_size=8, num_instances=2, workers=0, pad=2)
    values.update(overrides)
    return DataConfig(**values)


def test_load_images_decodes_and_resizes(tmp_path):
    records = _records(tmp_path, [0, 1, 2, 3])
    images = load_images(records, 16, 8)
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 16, 8)
    for image, colour in zip(images, COLOURS, strict=True):
        expected = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1)
        assert (image.float() - expected).abs().max() <= 4  # JPEG of a flat colour


def test_decode_errors_name_the_file(tmp_path):
    records = _records(tmp_path, [0, 1])
    bad = tmp_path / "0001.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DatasetError, match=f"cannot decode image {bad}"):
        load_images(records, 16, 8)
    dataset = ImageDataset(records, build_test_transform(_cfg()))
    dataset[0]
    with pytest.raises(DatasetError, match=f"cannot decode image {bad}"):
        dataset[1]
    with pytest.raises(DatasetError, match="missing.jpg"):
        read_image(str(tmp_path / "missing.jpg"))


def test_image_dataset_items_and_store_equivalence(tmp_path):
    records = _records(tmp_path, [5, 6, 7])
    transform = build_test_transform(_cfg())
    from_disk = ImageDataset(records, transform)
    in_memory = ImageDataset(records, transform, images=load_images(records, 16, 8), labels=[2, -1, 0])
    image, label, camid, index = from_disk[2]
    assert image.dtype == torch.float32 and image.shape == (3, 16, 8)
    assert (label, camid, index) == (7, 2, 2)
    assert in_memory[1][1:] == (-1, 1, 1)  # labels override the pids
    for i in range(3):
        assert torch.equal(from_disk[i][0], in_memory[i][0])


def test_image_dataset_rejects_mismatched_inputs(tmp_path):
    records = _records(tmp_path, [0, 1])
    transform = build_test_transform(_cfg())
    with pytest.raises(ValueError, match="uint8 \\[N, 3, H, W\\] tensor with N=2"):
        ImageDataset(records, transform, images=torch.zeros(3, 3, 16, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="labels has 1 entries for 2 records"):
        ImageDataset(records, transform, labels=[0])


def test_train_loader_pk_batches_skip_unlabelled(tmp_path):
    records = _records(tmp_path, list(range(6)) * 3)
    labels = [r.pid if r.pid != 5 else -1 for r in records]  # identity 5 unclustered
    cfg = _cfg(in_memory=True)
    loader = build_train_loader(records, cfg, labels=labels, seed=3)
    loader.sampler.set_epoch(0)
    expected = len(loader.sampler)
    seen = 0
    for images, batch_labels, camids, indices in loader:
        assert images.shape == (8, 3, 16, 8) and images.dtype == torch.float32
        assert sorted(Counter(batch_labels.tolist()).values()) == [2, 2, 2, 2]
        assert (batch_labels >= 0).all()
        assert torch.equal(batch_labels, torch.tensor([labels[i] for i in indices]))
        assert torch.equal(camids, torch.tensor([records[i].camid for i in indices]))
        seen += len(indices)
    assert seen == expected


def test_train_loader_is_reproducible(tmp_path):
    records = _records(tmp_path, [0, 1, 2, 3] * 2)
    images = load_images(records, 16, 8)

    def run(seed, workers):
        loader = build_train_loader(records, _cfg(workers=workers), seed=seed, images=images)
        torch.manual_seed(0)
        return [(b[0], b[3]) for b in loader]

    first, second = run(1, 0), run(1, 0)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, run(2, 0), strict=True))
    # With a worker, the loader's seeded generator fixes the augmentations.
    first, second = run(1, 1), run(1, 1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))


def test_test_loader_keeps_order(tmp_path):
    records = _records(tmp_path, [9, 8, 7, 6, 5])
    loader = build_test_loader(records, _cfg(in_memory=True), batch_size=2)
    batches = list(loader)
    assert [len(b[3]) for b in batches] == [2, 2, 1]
    assert torch.cat([b[3] for b in batches]).tolist() == [0, 1, 2, 3, 4]
    assert torch.cat([b[1] for b in batches]).tolist() == [9, 8, 7, 6, 5]
    transform = build_test_transform(_cfg())
    assert torch.equal(batches[0][0][1], transform(read_image(records[1].path)))
