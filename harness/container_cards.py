"""Model cards in container runs: a card names files by paths relative to itself, so its whole folder goes into
the container (`docker cp`, as the data does) and --models is rewritten to the card's path in there. Anything the
card names outside its folder could not follow it: that is refused before the container is created."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError


def card_copies(harness_args: list[str]) -> tuple[list[str], list[tuple[Path, str]]]:
    """(harness args with each card path of --models rewritten, [(host folder, container folder), ...])."""
    args = list(harness_args)
    for i, arg in enumerate(args):
        if arg == "--models" and i + 1 < len(args):
            at, value = i + 1, args[i + 1]
        elif arg.startswith("--models="):
            at, value = i, arg.split("=", 1)[1]
        else:
            continue
        refs, copies = [], []
        for ref in value.split(","):
            if ref.strip().endswith(".toml"):
                folder = f"/card-{len(copies)}"  # at the root: docker cp makes only the last folder
                copies.append((_folder_of(Path(ref.strip())), folder))
                ref = f"{folder}/{Path(ref.strip()).name}"
            refs.append(ref)
        args[at] = ",".join(refs) if at != i else f"--models={','.join(refs)}"
        return args, copies
    return args, []


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
