"""Keras twins of the zoo models carrying the *same* weights, for TensorFlow Lite conversion.

resnet8 is MLPerf's original Keras .h5. resnet20/32/44/56 are rebuilt in Keras (NHWC) and filled from the
PyTorch checkpoint: conv kernels OIHW -> HWIO, BatchNorm eps 1e-5, Linear transposed. PyTorch's stride-2
padding=1 is symmetric, so it becomes an explicit ZeroPadding2D(1) + 'valid' conv (Keras 'same' would pad
bottom/right only and shift every feature map by one pixel).
"""

from __future__ import annotations

from pathlib import Path


def keras_twin(spec, weights: Path):
    if spec.builder == "resnet8":
        import keras

        return keras.models.load_model(str(weights), compile=False)
    return _resnet_cifar(spec, weights)


def _resnet_cifar(spec, weights: Path):
    import keras
    import numpy as np

    torch_model = spec_torch(spec, weights)
    state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    layers = keras.layers

    def conv(x, name, stride):
        w = state[f"{name}.weight"].transpose(2, 3, 1, 0)
        if stride == 2:
            x = layers.ZeroPadding2D(1)(x)
        c = layers.Conv2D(w.shape[3], 3, strides=stride, padding="valid" if stride == 2 else "same",
                          use_bias=False)
        y = c(x)
        c.set_weights([w])
        return y

    def bn(x, name):
        b = layers.BatchNormalization(epsilon=1e-5)
        y = b(x)
        b.set_weights([state[f"{name}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")])
        return y

    inp = keras.Input((32, 32, 3), name="x")
    x = layers.ReLU()(bn(conv(inp, "conv1", 1), "bn1"))
    n = (int(spec.builder.split(":")[1]) - 2) // 6
    cin = 16
    for stage, cout in enumerate((16, 32, 64), start=1):
        for i in range(n):
            stride = 2 if stage > 1 and i == 0 else 1
            p = f"layer{stage}.{i}"
            y = layers.ReLU()(bn(conv(x, f"{p}.conv1", stride), f"{p}.bn1"))
            y = bn(conv(y, f"{p}.conv2", 1), f"{p}.bn2")
            if stride != 1 or cin != cout:
                pad = cout // 4  # option A: subsample, zero-pad the new channels
                x = layers.Lambda(lambda t, p=pad: keras.ops.pad(t[:, ::2, ::2, :],
                                                                 [[0, 0], [0, 0], [0, 0], [p, p]]))(x)
            x = layers.ReLU()(layers.Add()([y, x]))
            cin = cout
    x = layers.GlobalAveragePooling2D()(x)
    dense = layers.Dense(10)
    out = dense(x)
    dense.set_weights([state["linear.weight"].T, state["linear.bias"]])
    model = keras.Model(inp, out, name=spec.name)
    assert np.isfinite(model.get_weights()[0]).all()
    return model


def spec_torch(spec, weights):
    from harness.models import build_torch

    return build_torch(spec, weights)
