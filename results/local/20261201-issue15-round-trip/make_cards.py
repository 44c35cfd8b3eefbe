"""The cards of issue 15's acceptance runs (this folder and ../20261201-issue15-resnet18-card), as the runs used
them under /tmp/acc15/cards: python results/local/20261201-issue15-round-trip/make_cards.py CARD_DIR DATA_DIR,
from the repository root. resnet20 as ONNX / checkpoint + factory / TorchScript (the zoo's weights), and the
CIFAR ResNet-18 of tests/fixtures with seeded random weights and top_k = [1, 3]."""
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, ".")
from tests.cards import card_text, write_resnet20_cards  # noqa: E402
from tests.fixtures.resnet18_cifar import seeded_state_dict  # noqa: E402

root, data = Path(sys.argv[1]), Path(sys.argv[2])
print(write_resnet20_cards(root, data))
r18 = root / "resnet18"
r18.mkdir(parents=True, exist_ok=True)
shutil.copy("tests/fixtures/resnet18_cifar.py", r18 / "resnet18_cifar.py")
torch.save(seeded_state_dict(0), r18 / "resnet18.pt")
(r18 / "card.toml").write_text(card_text("resnet18-cifar", "torch-checkpoint", "resnet18.pt",
                                         'architecture = "resnet18_cifar:resnet18"\ntop_k = [1, 3]'))
