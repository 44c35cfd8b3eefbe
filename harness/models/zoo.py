"""The zoo: CIFAR-10 models with checksummed published weights, and ImageNet-shaped models (torchvision
architectures) whose published weights are optional. Model cards (harness.models.card) add the user's own."""

from __future__ import annotations

from harness.data.prep import Preprocess
from harness.models.spec import ModelSpec, Published

IMAGENET_NORM = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
TORCHVISION = "https://download.pytorch.org/models/"
MLPERF_TINY = ("https://github.com/mlcommons/tiny/raw/master/benchmark/training/"
               "image_classification/trained_models/")



def _akamaster(depth: int, filename: str, sha: str, top1: float) -> ModelSpec:
    return ModelSpec(f"resnet{depth}", f"resnet_cifar:{depth}", "akamaster_resnet_cifar10", filename, sha,
                     AKAMASTER + filename, top1, "akamaster/pytorch_resnet_cifar10 README", IMAGENET_NORM)


def _torchvision(arch: str, filename: str, top1: float, interpolation: str = "bilinear") -> ModelSpec:
    # torchvision publishes only the first 8 hex digits of each file's sha256, in its name
    return ModelSpec(arch, f"imagenet:{arch}", "torchvision", filename, filename.rsplit("-", 1)[1].split(".")[0],
                     TORCHVISION + filename, top1, "torchvision IMAGENET1K_V1, acc@1 on ILSVRC2012 val (optional: "
                     "without the file the cells run seeded random weights for latency and size only)",
                     IMAGENET_NORM, dataset="imagenet", input_size=224, num_classes=1000, resize_size=256,
                     interpolation=interpolation, weights_optional=True)


ZOO: dict[str, ModelSpec] = {
    "resnet8": ModelSpec(
        "resnet8", "resnet8", "mlperf_tiny_resnet8", "pretrainedResnet.h5",
        "5f938a8eea605438cc7360aa13c987bc6d7bd0c8d931b2917361ae7ae4eeda2f",
        MLPERF_TINY + "pretrainedResnet.h5", 85.0,
        "MLPerf Tiny quality target, not a measurement; measured here on the full test set: 87.19% for the "
        "Keras original (TensorFlow 2.21), its PyTorch twin and MLPerf's own fp32 .tflite",
        # The Keras original takes raw 0..255 RGB pixels, NHWC, with no rescaling layer.
        Preprocess(scale=1.0, layout="NHWC"),
        published=(
            Published("tflite", "fp32", "pretrainedResnet.tflite",
                      "b5c0046d6e0328b4956afd6baa29555a29b1f1c65bdd45aaed75b7cd484d9f79",
                      MLPERF_TINY + "pretrainedResnet.tflite"),
            Published("tflite", "int8", "pretrainedResnet_quant.tflite",
                      "3c002613d1b2475eb51dd78dfb85a546c8ae658dee71cf6ade43b022fe205415",
                      MLPERF_TINY + "pretrainedResnet_quant.tflite"),
        ), ends_in_softmax=True),
    "resnet20": _akamaster(20, "resnet20-12fca82f.th",
                           "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8", 91.73),
    "resnet32": _akamaster(32, "resnet32-d509ac18.th",
                           "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850", 92.63),
    "resnet44": _akamaster(44, "resnet44-014dd654.th",
                           "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4", 93.10),
    "resnet56": _akamaster(56, "resnet56-4bfd9763.th",
                           "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367", 93.39),
    "resnet50": _torchvision("resnet50", "resnet50-0676ba61.pth", 76.130),
    "mobilenet_v2": _torchvision("mobilenet_v2", "mobilenet_v2-b0353104.pth", 71.878),
    "efficientnet_b0": _torchvision("efficientnet_b0", "efficientnet_b0_rwightman-7f5810bc.pth", 77.692, "bicubic"),
}
