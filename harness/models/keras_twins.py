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

        model = keras.models.load_model(str(weights), compile=False)
        head = model.layers[-1]  # Dense(10, activation="softmax"): logits out, as Source.torch_model gives
        if spec.ends_in_softmax and head.get_config().get("activation") == "softmax":
            head.activation = keras.activations.linear
        return model
    return _resnet_cifar(spec, weights)


def _conv(x, state: dict, name: str, stride: int):
    import keras

    w = state[f"{name}.weight"].transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if stride == 2:
        x = keras.layers.ZeroPadding2D(1)(x)
    conv = keras.layers.Conv2D(w.shape[3], 3, strides=stride, padding="valid" if stride == 2 else "same",
                               use_bias=False)
    y = conv(x)
    conv.set_weights([w])
    return y


def _bn(x, state: dict, name: str):
    import keras

    bn = keras.layers.BatchNormalization(epsilon=1e-5)
    y = bn(x)
    bn.set_weights([state[f"{name}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")])
    return y


def _shortcut_a(x, pad: int):
    """Option A: subsample by 2 and zero-pad the new channels."""
    import keras

    return keras.layers.Lambda(lambda t: keras.ops.pad(t[:, ::2, ::2, :], [[0, 0], [0, 0], [0, 0], [pad, pad]]))(x)


def _resnet_cifar(spec, weights: Path):
    import keras

    from harness.models import build_torch

    state = {k: v.detach().numpy() for k, v in build_torch(spec, weights).state_dict().items()}
    relu = keras.layers.ReLU
    inp = keras.Input((32, 32, 3), name="x")
    x = relu()(_bn(_conv(inp, state, "conv1", 1), state, "bn1"))
    n, cin = (int(spec.builder.split(":")[1]) - 2) // 6, 16
    for stage, cout in enumerate((16, 32, 64), start=1):
        for i in range(n):
            stride, p = (2 if stage > 1 and i == 0 else 1), f"layer{stage}.{i}"
            y = relu()(_bn(_conv(x, state, f"{p}.conv1", stride), state, f"{p}.bn1"))
            y = _bn(_conv(y, state, f"{p}.conv2", 1), state, f"{p}.bn2")
            if stride != 1 or cin != cout:
                x = _shortcut_a(x, cout // 4)
            x, cin = relu()(keras.layers.Add()([y, x])), cout
    dense = keras.layers.Dense(10)
    out = dense(keras.layers.GlobalAveragePooling2D()(x))
    dense.set_weights([state["linear.weight"].T, state["linear.bias"]])
    return keras.Model(inp, out, name=spec.name)
