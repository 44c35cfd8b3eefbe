"""What a model is to the harness: its source (zoo builder or card), weights, preprocessing and dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.data.cifar10 import cache_dir
from harness.data.download import fetch, verify
from harness.data.prep import Preprocess
from harness.errors import UserError


@dataclass(frozen=True)
class DataSource:
    """A card's dataset: kind cifar10 | imagenet-val | npz | imagefolder; test and calibration are absolute
    paths (npz files or folders; empty for cifar10, which comes from the data dir like the zoo's)."""

    kind: str
    test: str = ""
    calibration: str = ""


@dataclass(frozen=True)
class Published:
    """A quantized/converted artifact published with the model, run as its own cell (variant "published")."""

    backend: str
    precision: str
    filename: str
    sha256: str
    url: str


def _verified(data_dir: Path, subdir: str, filename: str, sha256: str, url: str, may_download: bool) -> Path:
    local = data_dir / subdir / filename
    if local.is_file():
        verify(local, sha256)
        return local
    if not may_download:
        raise UserError(f"weight file {local} not found (expected the published file {url}, sha256 {sha256})")
    return fetch(url, cache_dir() / "weights" / filename, sha256)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: str  # "resnet_cifar:<depth>" or "resnet8"
    subdir: str  # folder under the data dir that holds the weight file
    filename: str
    sha256: str
    url: str
    published_top1: float | None
    published_note: str
    preprocess: Preprocess
    published: tuple[Published, ...] = ()
    dataset: str = "cifar10"  # or "imagenet": 1000 classes, 224 x 224 inputs, see harness.data.imagenet
    input_size: int = 32
    num_classes: int = 10
    resize_size: int = 0  # imagenet: shorter side before the centre crop (torchvision's preset)
    interpolation: str = "bilinear"
    # True: without the weight file the model still runs, on seeded random weights, for latency and size only
    weights_optional: bool = False
    # True: the published model ends in a softmax. Artifacts built here leave it out and are scored on logits:
    # argmax and top-k are unchanged in float, but a softmax quantized to int8 makes many outputs tie
    ends_in_softmax: bool = False
    # A model card's (see harness.models.card); zoo entries leave these empty
    card: str = ""  # the card file, absolute
    card_sha256: str = ""
    code_files: tuple[str, ...] = ()  # files whose edit must re-export (the card, a factory's module)
    top_k: tuple[int, ...] = (1, 5)  # the k of accuracy.topk
    class_names: tuple[str, ...] = ()
    license: str = ""
    data: DataSource | None = None  # a card's own dataset; None: the zoo's (`dataset` says which)

    @property
    def uint8_inputs(self) -> bool:
        """Test images kept as uint8 and normalized batch by batch in the worker (all but CIFAR-10 tensors)."""
        return self.dataset != "cifar10"

    def weights_path(self, data_dir: Path, may_download: bool) -> Path | None:
        """The verified weight file: from the data dir, else (if allowed) downloaded into the cache; None
        when optional weights are not there and may not be downloaded."""
        if self.card:
            return _card_file(self)
        if self.weights_optional and not may_download and not (data_dir / self.subdir / self.filename).is_file():
            return None
        try:
            return _verified(data_dir, self.subdir, self.filename, self.sha256, self.url, may_download)
        except UserError as exc:
            raise UserError(f"model {self.name}: {exc}") from None

    def published_path(self, artifact: Published, data_dir: Path, may_download: bool) -> Path:
        return _verified(data_dir, self.subdir, artifact.filename, artifact.sha256, artifact.url, may_download)

    def describe(self) -> dict:
        return {"name": self.name, "weights": self.filename, "weights_sha256": self.sha256,
                "url": self.url, "published_top1": self.published_top1,
                "published_note": self.published_note, "preprocess": self.preprocess.describe(),
                "dataset": self.dataset, "input_size": self.input_size, "num_classes": self.num_classes,
                **({"card": self.card, "card_sha256": self.card_sha256, "source": self.builder.partition(":")[0],
                    "license": self.license, "top_k": list(self.top_k)} if self.card else {})}


def _card_file(spec: ModelSpec) -> Path:
    """A card's model file, checked against the card's sha256 when it gives one."""
    path = Path(spec.filename)
    if not path.is_file():
        raise UserError(f"{spec.card}: key 'path' = {spec.filename!r}: expected an existing file")
    if spec.sha256:
        try:
            verify(path, spec.sha256)
        except UserError as exc:
            raise UserError(f"{spec.card}: key 'sha256' = {spec.sha256!r}: expected the sha256 of the model file "
                            f"({exc})") from None
    return path
