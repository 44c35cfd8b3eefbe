"""Model cards in container runs: a card names files by paths relative to itself, so its whole folder goes into
the container (`docker cp`, as the data does) and --models is rewritten to the card's path in there. Anything the
card names outside its folder could not follow it: that is refused before the container is created."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError


def take_option(args: list[str], name: str) -> tuple[str | None, list[str], int]:
    """(the value of `name`, given as `name VALUE` or `name=VALUE`, the last one winning; the other args; the
    position in them where it stood)."""
    rest, value, at, it = [], None, 0, iter(args)
    for a in it:
        if a == name or a.startswith(name + "="):
            value, at = (next(it, None) if a == name else a.split("=", 1)[1]), len(rest)
        else:
            rest.append(a)
    return value, rest, at


def card_copies(harness_args: list[str]) -> tuple[list[str], list[tuple[Path, str]]]:
    """(harness args with each card path of --models rewritten, [(host folder, container folder), ...])."""
    value, rest, at = take_option(harness_args, "--models")
    refs, copies = [], []
    for ref in (value or "").split(","):
        if ref.strip().endswith(".toml"):
            card = Path(ref.strip())
            folder = f"/card-{len(copies)}"  # at the root: docker cp makes only the last folder
            copies.append((_folder_of(card), folder))
            ref = f"{folder}/{card.name}"
        refs.append(ref)
    if not copies:
        return list(harness_args), []
    rest[at:at] = ["--models", ",".join(refs)]
    return rest, copies


def _folder_of(card: Path) -> Path:
    """The card's folder, once every file the card names is found inside it."""
    from harness.models.card import load_card

    spec = load_card(card, check_model=False)
    folder = Path(spec.card).parent
    # a factory's module may come from an installed package instead (the image's own, then): not checked here
    named = {"path": Path(spec.filename)}
    if spec.data and spec.data.test:
        named.update({"dataset.test": Path(spec.data.test), "dataset.calibration": Path(spec.data.calibration)})
    for key, path in named.items():
        if folder not in path.resolve().parents:
            raise UserError(f"{card}: key '{key}' = {str(path)!r}: expected a path inside the card's folder "
                            f"({folder}) for a container run, which copies that folder into the image")
    return folder
