"""Model cards: a TOML file that makes the user's own classifier a model like the zoo's (see README, "Your own
model"). Loading checks every key and file; harness.models.info checks the model itself (its output)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from harness.config import tomllib
from harness.data.prep import Preprocess
from harness.errors import UserError, expect
from harness.models.spec import DataSource, ModelSpec
from harness.models.zoo import ZOO

CARD_SCHEMA_VERSION = 1
SOURCE_KINDS = ("onnx", "torchscript", "torch-checkpoint")
DATASET_KINDS = ("cifar10", "imagenet-val", "npz", "imagefolder")
KEYS = {"schema_version", "name", "source", "path", "sha256", "architecture", "num_classes", "class_names",
        "input", "preprocess", "dataset", "published_top1", "top_k", "license", "url"}
PREPROCESS_KEYS = {"scale", "mean", "std", "channels", "resize", "interpolation"}
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


def _read(path: Path) -> tuple[dict, bytes]:
    if not path.is_file():
        raise UserError(f"model card {path}: no such file (expected a zoo name, one of {', '.join(ZOO)}, "
                        "or a path to a *.toml card)")
    data = path.read_bytes()
    try:
        raw = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    return raw, data


def load_card(path: Path, check_model: bool = True) -> ModelSpec:
    """The card as a ModelSpec; every error names the card, the key and what was expected (exit 2).
    check_model: also parse the ONNX file and import the factory. The run does that once, before anything is
    written; a worker passes False, so that its measuring processes import neither onnx nor the user's module
    (which imports torch: 0.3-0.5 GB in an ONNX Runtime timing process that never uses it)."""
    path = path.resolve()
    raw, text = _read(path)
    where = str(path)
    for key in raw:
        expect(key in KEYS, where, key, raw[key], f"one of {sorted(KEYS)}")
    expect(raw.get("schema_version") == CARD_SCHEMA_VERSION, where, "schema_version", raw.get("schema_version"),
           str(CARD_SCHEMA_VERSION))
    name = raw.get("name")
    expect(isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name or "") is not None,
           where, "name", name, "a name of letters, digits, '_', '.', '-' (it names the cells' files)")
    expect(name not in ZOO, where, "name", name, "a name that is not a zoo model's")
    builder, model_file, sha = _source(raw, path, where)
    num_classes = raw.get("num_classes")
    expect(isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 2, where,
           "num_classes", num_classes, "an integer >= 2")
    size, layout = _input(raw.get("input"), where)
    pre, resize, interpolation = _preprocess(raw.get("preprocess", {}), layout, where)
    data = _dataset(raw.get("dataset"), path.parent, where, size)
    expect(data.kind != "imagenet-val" or num_classes == 1000, where, "num_classes", num_classes,
           "1000 for dataset kind imagenet-val (its labels are the ranks of ILSVRC2012's 1000 WordNet ids)")
    spec = ModelSpec(
        name=name, builder=builder, subdir="", filename=str(model_file), sha256=sha, url=_text(raw, "url", where),
        published_top1=_top1(raw, where), published_note=f"model card {path.name}", preprocess=pre,
        dataset=data.kind, input_size=size, num_classes=num_classes, resize_size=resize, interpolation=interpolation,
        card=where, card_sha256=hashlib.sha256(text).hexdigest(), code_files=(where,),
        top_k=_top_k(raw, num_classes, where), class_names=_class_names(raw, num_classes, where),
        license=_text(raw, "license", where), data=data)
    if builder == "onnx" and check_model:
        from harness.models.onnx_file import check_file

        check_file(model_file, where)
    if builder.startswith("torch-checkpoint:"):
        from harness.models.checkpoint import factory, module_file

        if check_model:
            factory(spec)  # importable, and a function: else a one-line error now, not a failed cell later
        spec = _replace(spec, code_files=(where, module_file(spec)))
    return spec


def _source(raw: dict, path: Path, where: str) -> tuple[str, Path, str]:
    """(ModelSpec.builder, the model file, its sha256 or "")."""
    source = raw.get("source")
    expect(source in SOURCE_KINDS, where, "source", source, f"one of {', '.join(SOURCE_KINDS)}")
    model_file = _file(raw, "path", path.parent, where)
    sha = raw.get("sha256", "")
    expect(isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}|", sha) is not None, where, "sha256", sha,
           "64 lowercase hex digits")
    if source != "torch-checkpoint":
        expect("architecture" not in raw, where, "architecture", raw.get("architecture"),
               "no architecture: only a torch-checkpoint card names a factory")
        return source, model_file, sha
    arch = raw.get("architecture")
    expect(isinstance(arch, str) and re.fullmatch(r"[\w.]+:\w+", arch or "") is not None, where,
           "architecture", arch, "'module.path:factory', importable from the card's folder")
    return f"{source}:{arch}", model_file, sha


def _replace(spec: ModelSpec, **changes) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, **changes)


def _file(raw: dict, key: str, folder: Path, where: str) -> Path:
    value = raw.get(key)
    expect(isinstance(value, str) and value != "", where, key, value, "a path relative to the card")
    path = (folder / value).resolve()
    expect(path.exists(), where, key, value, f"an existing file or folder ({path} does not exist)")
    return path


def _text(raw: dict, key: str, where: str) -> str:
    value = raw.get(key, "")
    expect(isinstance(value, str), where, key, value, "a string")
    return value


def _top1(raw: dict, where: str) -> float | None:
    value = raw.get("published_top1")
    expect(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100),
           where, "published_top1", value, "a percentage between 0 and 100")
    return None if value is None else float(value)


def _top_k(raw: dict, num_classes: int, where: str) -> tuple[int, ...]:
    value = raw.get("top_k", [1, 5] if num_classes > 5 else [1])
    ok = isinstance(value, list) and value and all(isinstance(k, int) and 1 <= k <= num_classes for k in value)
    expect(bool(ok), where, "top_k", value, f"a list of integers between 1 and num_classes ({num_classes})")
    return tuple(sorted(set(value) | {1}))


def _class_names(raw: dict, num_classes: int, where: str) -> tuple[str, ...]:
    value = raw.get("class_names", [])
    expect(isinstance(value, list) and all(isinstance(v, str) for v in value) and len(value) in (0, num_classes),
           where, "class_names", value, f"a list of num_classes ({num_classes}) strings")
    return tuple(value)


def _input(value, where: str) -> tuple[int, str]:
    expect(isinstance(value, dict) and set(value) <= {"shape", "layout"}, where, "input", value,
           "a table with 'shape' and 'layout', e.g. {shape = [3, 32, 32], layout = \"NCHW\"}")
    layout = value.get("layout", "NCHW")
    expect(layout in ("NCHW", "NHWC"), where, "input.layout", layout, "'NCHW' or 'NHWC'")
    shape = value.get("shape")
    ok = isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)
    c, h, w = (shape if layout == "NCHW" else [shape[2], shape[0], shape[1]]) if ok else (0, 0, 0)
    expect(ok and c == 3 and h == w, where, "input.shape", shape,
           f"3 positive integers in {layout} order without the batch, 3 channels (RGB images), square")
    return h, layout


def _preprocess(value, layout: str, where: str) -> tuple[Preprocess, int, str]:
    expect(isinstance(value, dict), where, "preprocess", value, "a table")
    for key in value:
        expect(key in PREPROCESS_KEYS, where, f"preprocess.{key}", value[key], f"one of {sorted(PREPROCESS_KEYS)}")
    scale = value.get("scale", 1 / 255)
    expect(isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0, where, "preprocess.scale",
           scale, "a positive number (multiplies the uint8 pixels first)")
    for key, default in (("mean", 0.0), ("std", 1.0)):
        v = value.get(key, [default] * 3)
        expect(isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)
               and (key == "mean" or all(x > 0 for x in v)), where, f"preprocess.{key}", v,
               "3 numbers, one per RGB channel, after scaling" + (" (all > 0)" if key == "std" else ""))
    channels = value.get("channels", "RGB")
    expect(channels in ("RGB", "BGR"), where, "preprocess.channels", channels, "'RGB' or 'BGR'")
    resize = value.get("resize", 0)
    expect(isinstance(resize, int) and resize >= 0, where, "preprocess.resize", resize,
           "a shorter-side size in pixels before the centre crop (0: the input size)")
    interpolation = value.get("interpolation", "bilinear")
    expect(interpolation in INTERPOLATIONS, where, "preprocess.interpolation", interpolation,
           f"one of {', '.join(INTERPOLATIONS)}")
    pre = Preprocess(scale=float(scale), mean=tuple(map(float, value.get("mean", [0.0] * 3))),
                     std=tuple(map(float, value.get("std", [1.0] * 3))), channels=channels, layout=layout)
    return pre, resize, interpolation


def _dataset(value, folder: Path, where: str, size: int) -> DataSource:
    expect(isinstance(value, dict) and value.get("kind") in DATASET_KINDS, where, "dataset.kind",
           (value or {}).get("kind") if isinstance(value, dict) else value, f"one of {', '.join(DATASET_KINDS)}")
    kind = value["kind"]
    allowed = {"kind"} if kind == "cifar10" else {"kind", "test", "calibration"}
    for key in value:
        expect(key in allowed, where, f"dataset.{key}", value[key], f"one of {sorted(allowed)} for kind {kind}")
    if kind == "cifar10":
        expect(size == 32, where, "input.shape", size, "32 x 32 images for dataset kind cifar10")
        return DataSource(kind)
    test = _file(value, "test", folder, f"{where} [dataset]")
    calib = _file(value, "calibration", folder, f"{where} [dataset]")
    is_dir = kind != "npz"
    for key, p in (("test", test), ("calibration", calib)):
        expect(p.is_dir() == is_dir, where, f"dataset.{key}", str(p), "a folder" if is_dir else "an .npz file")
    nested = test == calib or test in calib.parents or calib in test.parents
    expect(not nested, where, "dataset.calibration", str(calib),
           f"a {'folder' if is_dir else 'file'} apart from the test set's ({test}): calibration never comes "
           "from test images")
    return DataSource(kind, str(test), str(calib))
