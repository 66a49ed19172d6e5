"""Conv1D, Conv2D and Conv2DTranspose with Keras arguments, fast on CPU.

``impl='auto'`` (the default) runs the im2col kernels of `conv_ops` on CPU,
where XLA's own convolution is about 2x slower in a training step (and far
slower inside `lax.scan`), and `lax.conv_general_dilated` on GPU/TPU. Both
implementations create the same parameters, ``kernel`` (HWIO:
``(*kernel_size, in, filters)``) and ``bias`` ``(filters,)``, so a checkpoint
trained on one backend loads on the other; ``impl='im2col'`` or ``'xla'``
forces one (tests, benchmarks).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxnets.layers import Conv2D
  >>> layer = Conv2D(8, 3, padding="same", activation="relu")
  >>> x = jnp.ones((2, 28, 28, 1))
  >>> variables = layer.init(jax.random.key(0), x)
  >>> layer.apply(variables, x).shape
  (2, 28, 28, 8)
  >>> variables["params"]["kernel"].shape
  (3, 3, 1, 8)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxnets import regularizers
from jaxnets.errors import ConfigError, ShapeError, lookup
from jaxnets.layers import activations, conv_ops, initializers
from jaxnets.layers.base import (
    Layer,
    as_tuple,
    check_positive,
    check_spatial_rank,
    float_inputs,
    regularizer_field,
    resolve_impl,
)
from jaxnets.layers.core import rows_dot


class _Conv(Layer):
    """Shared body of the N-d convolutions; subclasses fix ``rank``."""

    rank: ClassVar[int] = 2
    transpose: ClassVar[bool] = False

    filters: int
    kernel_size: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str = "valid"
    dilation_rate: int | tuple[int, ...] = 1
    activation: str | Callable | None = None
    use_bias: bool = True
    kernel_initializer: str | Callable = "glorot_uniform"
    bias_initializer: str | Callable = "zeros"
    impl: str = "auto"
    groups: int = 1
    kernel_regularizer: str | Callable | None = regularizer_field()
    bias_regularizer: str | Callable | None = regularizer_field()

    def __post_init__(self):
        # Keras rejects these at construction; later they would divide by zero while tracing.
        layer = type(self).__name__
        check_positive(layer, filters=self.filters, groups=self.groups)
        if self.transpose and self.groups != 1:
            raise ConfigError(f"{layer} does not support groups (nor does Keras); leave it at 1.")
        if self.filters % self.groups:
            raise ConfigError(
                f"{layer} groups={self.groups} must divide filters={self.filters} (as in Keras)."
            )
        as_tuple(self.kernel_size, self.rank, f"{layer} kernel_size")
        as_tuple(self.strides, self.rank, f"{layer} strides")
        as_tuple(self.dilation_rate, self.rank, f"{layer} dilation_rate")
        super().__post_init__()

    def _padding(self) -> str:
        valid = {"valid": 0, "same": 1}
        if self.rank == 1 and not self.transpose:
            valid["causal"] = 2  # Keras allows causal padding for Conv1D only.
        lookup(self.padding, valid, kind="padding")
        return self.padding.lower()

    @nn.compact
    def __call__(self, x, train: bool = False):
        check_spatial_rank(type(self).__name__, x.shape, self.rank)
        x = float_inputs(x)
        ksize = as_tuple(self.kernel_size, self.rank, "kernel_size")
        strides = as_tuple(self.strides, self.rank, "strides")
        dilation = as_tuple(self.dilation_rate, self.rank, "dilation_rate")
        padding = self._padding()
        if x.shape[-1] % self.groups:
            raise ShapeError(
                f"{type(self).__name__} groups={self.groups} must divide the input channels, "
                f"got inputs of shape {x.shape}."
            )
        kernel = self.param(
            "kernel",
            initializers.get(self.kernel_initializer),
            (*ksize, x.shape[-1] // self.groups, self.filters),
        )
        regularizers.add_penalty(self, "kernel", kernel, self.kernel_regularizer)
        kernel = kernel.astype(x.dtype)
        impl = resolve_impl(self.impl)
        if self.transpose:
            fn = conv_ops.conv_transpose_xla if impl == "xla" else conv_ops.conv_transpose_col2im
            y = fn(x, kernel, strides=strides, padding=padding)
        else:
            _check_window_fits(self, x.shape[1:-1], ksize, dilation, padding)
            if max(dilation) > 1 and max(strides) > 1:
                raise ConfigError(
                    f"strides {strides} and dilation_rate {dilation} cannot both exceed 1 "
                    "(Keras has the same rule); set one of them to 1."
                )
            fn = conv_ops.conv_xla if impl == "xla" else conv_ops.conv_im2col
            if self.groups == 1:
                y = fn(x, kernel, strides=strides, padding=padding, dilation=dilation)
            else:  # Keras's groups: group g convolves channels g*C/G.. with filters g*F/G..
                xs = jnp.split(x, self.groups, axis=-1)
                ks = jnp.split(kernel, self.groups, axis=-1)
                y = jnp.concatenate(
                    [
                        fn(xg, kg, strides=strides, padding=padding, dilation=dilation)
                        for xg, kg in zip(xs, ks, strict=True)
                    ],
                    axis=-1,
                )
        return _bias_and_activation(self, y, self.filters)


class Conv1D(_Conv):
    """1-D convolution over ``(B, T, C)`` (Keras ``Conv1D``).

    Attributes:
      kernel_regularizer, bias_regularizer: keyword-only Keras weight penalties (None, 'l1', 'l2',
        `jaxnets.regularizers.L2(0.01)`...), added to the training loss once per step.
      filters: output channels.
      kernel_size: int or 1-tuple.
        The window length in steps; ``kernel`` is ``(*kernel_size, C, filters)``.
      strides: int or 1-tuple.
        Step between windows (default 1).
      padding: 'valid', 'same' or 'causal' (left padding only).
        'valid' (default) pads nothing; 'same' pads as TensorFlow: ``ceil(T / strides)`` steps.
      dilation_rate: int or 1-tuple; cannot exceed 1 together with strides.
        Spacing between kernel taps (default 1, a dense kernel).
      activation: name or callable; None is linear.
      use_bias, kernel_initializer, bias_initializer: as in Keras.
        ``use_bias`` adds a learned ``bias`` ``(filters,)``; the initializers (Keras names or
        callables) create ``kernel`` (default 'glorot_uniform') and ``bias`` (default 'zeros').
      impl: 'auto', 'im2col' or 'xla'.
        'auto' (default) runs the im2col kernels on CPU and `lax.conv_general_dilated` on
        GPU/TPU; the others force one. Parameters are the same for all three.
      groups: split the input channels and the filters into this many groups, each
        convolved on its own (Keras ``groups``; default 1); ``kernel`` is then
        ``(*kernel_size, C / groups, filters)``. It must divide both.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(T, C)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.ones((2, 10, 3))
      >>> layer = Conv1D(4, 3, padding="causal")
      >>> layer.apply(layer.init(jax.random.key(0), x), x).shape
      (2, 10, 4)
    """

    rank: ClassVar[int] = 1


class Conv2D(_Conv):
    """2-D convolution over NHWC images (Keras ``Conv2D``).

    Attributes are those of `Conv1D` with 2-tuples; padding 'valid' or 'same'.

    Attributes:
      kernel_regularizer, bias_regularizer: keyword-only Keras weight penalties (None, 'l1', 'l2',
        `jaxnets.regularizers.L2(0.01)`...), added to the training loss once per step.
      filters: output channels.
      kernel_size: int or 2-tuple ``(kh, kw)``; ``kernel`` is ``(kh, kw, C, filters)``.
      strides: int or 2-tuple, the step between windows (default 1).
      padding: 'valid' (default, no padding) or 'same' (as TensorFlow: ``ceil(n / stride)``).
      dilation_rate: int or 2-tuple, spacing between kernel taps (default 1); cannot
        exceed 1 together with ``strides``.
      activation: name or callable applied to the output; None (default) is linear.
      use_bias: add a learned ``bias`` ``(filters,)`` (default True).
      kernel_initializer: Keras name or JAX initializer of ``kernel`` (default 'glorot_uniform').
      bias_initializer: Keras name or JAX initializer of ``bias`` (default 'zeros').
      impl: 'auto' (default: im2col on CPU, `lax.conv_general_dilated` on GPU/TPU),
        'im2col' or 'xla' to force one; parameters are the same for all three.
      groups: split the input channels and filters into this many independent groups
        (Keras ``groups``; default 1); ``kernel`` is then ``(kh, kw, C / groups, filters)``.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(H, W, C)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxnets.layers import Conv2D
      >>> layer = Conv2D(2, (2, 2), kernel_initializer="ones")
      >>> x = jnp.arange(9.0).reshape(1, 3, 3, 1)
      >>> variables = layer.init(jax.random.key(0), x)
      >>> jax.tree.map(jnp.shape, variables)
      {'params': {'bias': (2,), 'kernel': (2, 2, 1, 2)}}
      >>> layer.apply(variables, x)[0, :, :, 0].tolist()  # sums of the 2x2 windows
      [[8.0, 12.0], [20.0, 24.0]]
    """

    rank: ClassVar[int] = 2


class Conv2DTranspose(_Conv):
    """Transposed 2-D convolution, upsampling by ``strides`` (Keras ``Conv2DTranspose``).

    Output size is ``n * s`` for 'same' and ``n * s + max(k - s, 0)`` for
    'valid', as in Keras. The kernel is HWIO ``(kh, kw, in, filters)`` and is
    applied unflipped, as `flax.linen.ConvTranspose` does; a Keras kernel
    ``(kh, kw, filters, in)`` ports as ``k[::-1, ::-1].swapaxes(2, 3)``.
    ``dilation_rate`` is not supported.

    Attributes:
      kernel_regularizer, bias_regularizer: keyword-only Keras weight penalties (None, 'l1', 'l2',
        `jaxnets.regularizers.L2(0.01)`...), added to the training loss once per step.
      filters: output channels.
      kernel_size: int or 2-tuple ``(kh, kw)``; ``kernel`` is ``(kh, kw, C, filters)``.
      strides: int or 2-tuple, the upsampling factor (default 1).
      padding: 'valid' (default) or 'same'; see the output sizes above.
      dilation_rate: must stay 1 (anything else raises `ConfigError`).
      activation: name or callable applied to the output; None (default) is linear.
      use_bias: add a learned ``bias`` ``(filters,)`` (default True).
      kernel_initializer: Keras name or JAX initializer of ``kernel`` (default 'glorot_uniform').
      bias_initializer: Keras name or JAX initializer of ``bias`` (default 'zeros').
      impl: 'auto' (default: col2im on CPU, `lax.conv_transpose` on GPU/TPU),
        'im2col' (runs col2im) or 'xla' to force one; parameters are the same for all three.
      groups: must stay 1 (Keras's Conv2DTranspose has no groups).
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(H, W, C)``; only `Sequential` reads it, to build from its first layer. Default None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.ones((1, 7, 7, 16))
      >>> layer = Conv2DTranspose(8, 4, strides=2, padding="same")
      >>> layer.apply(layer.init(jax.random.key(0), x), x).shape
      (1, 14, 14, 8)
    """

    rank: ClassVar[int] = 2
    transpose: ClassVar[bool] = True

    def __post_init__(self):
        if as_tuple(self.dilation_rate, 2, "dilation_rate") != (1, 1):
            raise ConfigError("Conv2DTranspose does not support dilation_rate; leave it at 1.")
        super().__post_init__()


class DepthwiseConv2D(Layer):
    """Depthwise 2-D convolution of NHWC images (Keras ``DepthwiseConv2D``).

    Each input channel is convolved with its own ``depth_multiplier`` filters; output
    channel ``c * depth_multiplier + m`` comes from channel ``c``, as in Keras.

    Attributes:
      depthwise_regularizer, bias_regularizer: keyword-only Keras weight penalties (None, 'l1', 'l2',
        `jaxnets.regularizers.L2(0.01)`...), added to the training loss once per step.
      kernel_size: int or 2-tuple ``(kh, kw)``.
      strides: int or 2-tuple (default 1).
      padding: 'valid' (default) or 'same' (as TensorFlow: ``ceil(n / stride)``).
      depth_multiplier: filters per input channel (default 1).
      dilation_rate: int or 2-tuple (default 1); cannot exceed 1 together with ``strides``.
      activation: name or callable applied to the output; None (default) is linear.
      use_bias: add a learned ``bias`` ``(C * depth_multiplier,)`` (default True).
      depthwise_initializer: Keras name or JAX initializer of ``depthwise_kernel``
        ``(kh, kw, C, depth_multiplier)`` (Keras's shape; default 'glorot_uniform').
      bias_initializer: Keras name or JAX initializer of ``bias`` (default 'zeros').
      impl: 'auto' (default: slices on CPU, `lax.conv_general_dilated` on GPU/TPU),
        'im2col' or 'xla'; parameters are the same for all three.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(H, W, C)``; only `Sequential` reads it. Default None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = DepthwiseConv2D(3, depth_multiplier=2, padding="same")
      >>> x = jnp.ones((1, 5, 5, 3))
      >>> variables = layer.init(jax.random.key(0), x)
      >>> layer.apply(variables, x).shape, variables["params"]["depthwise_kernel"].shape
      ((1, 5, 5, 6), (3, 3, 3, 2))
    """

    kernel_size: int | tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: str = "valid"
    depth_multiplier: int = 1
    dilation_rate: int | tuple[int, int] = 1
    activation: str | Callable | None = None
    use_bias: bool = True
    depthwise_initializer: str | Callable = "glorot_uniform"
    bias_initializer: str | Callable = "zeros"
    impl: str = "auto"
    depthwise_regularizer: str | Callable | None = regularizer_field()
    bias_regularizer: str | Callable | None = regularizer_field()

    def __post_init__(self):
        _check_depthwise_config(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = _depthwise(self, x, self.depthwise_initializer)
        return _bias_and_activation(self, y, y.shape[-1])


class SeparableConv2D(Layer):
    """Depthwise then pointwise (1x1) 2-D convolution (Keras ``SeparableConv2D``).

    Parameters (Keras's names, shapes and order): ``depthwise_kernel``
    ``(kh, kw, C, depth_multiplier)``, ``pointwise_kernel``
    ``(1, 1, C * depth_multiplier, filters)`` and ``bias`` ``(filters,)``.

    Attributes:
      depthwise_regularizer, pointwise_regularizer, bias_regularizer: keyword-only Keras weight penalties (None, 'l1', 'l2',
        `jaxnets.regularizers.L2(0.01)`...), added to the training loss once per step.
      filters: output channels.
      kernel_size: int or 2-tuple ``(kh, kw)`` of the depthwise step.
      strides: int or 2-tuple of the depthwise step (default 1).
      padding: 'valid' (default) or 'same' (as TensorFlow).
      depth_multiplier: depthwise filters per input channel (default 1).
      dilation_rate: int or 2-tuple (default 1); cannot exceed 1 together with ``strides``.
      activation: name or callable applied to the output; None (default) is linear.
      use_bias: add a learned ``bias`` ``(filters,)`` (default True).
      depthwise_initializer: Keras name or JAX initializer of ``depthwise_kernel``
        (default 'glorot_uniform').
      pointwise_initializer: Keras name or JAX initializer of ``pointwise_kernel``
        (default 'glorot_uniform').
      bias_initializer: Keras name or JAX initializer of ``bias`` (default 'zeros').
      impl: 'auto' (default), 'im2col' or 'xla', as `DepthwiseConv2D`.
      input_shape: keyword-only (Keras): one example's shape without the batch axis,
        e.g. ``(H, W, C)``; only `Sequential` reads it. Default None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = SeparableConv2D(8, 3, strides=2, padding="same")
      >>> x = jnp.ones((1, 7, 7, 3))
      >>> variables = layer.init(jax.random.key(0), x)
      >>> layer.apply(variables, x).shape, variables["params"]["pointwise_kernel"].shape
      ((1, 4, 4, 8), (1, 1, 3, 8))
    """

    filters: int
    kernel_size: int | tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: str = "valid"
    depth_multiplier: int = 1
    dilation_rate: int | tuple[int, int] = 1
    activation: str | Callable | None = None
    use_bias: bool = True
    depthwise_initializer: str | Callable = "glorot_uniform"
    pointwise_initializer: str | Callable = "glorot_uniform"
    bias_initializer: str | Callable = "zeros"
    impl: str = "auto"
    depthwise_regularizer: str | Callable | None = regularizer_field()
    pointwise_regularizer: str | Callable | None = regularizer_field()
    bias_regularizer: str | Callable | None = regularizer_field()

    def __post_init__(self):
        check_positive("SeparableConv2D", filters=self.filters)
        _check_depthwise_config(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = _depthwise(self, x, self.depthwise_initializer)
        pointwise = self.param(
            "pointwise_kernel",
            initializers.get(self.pointwise_initializer),
            (1, 1, y.shape[-1], self.filters),
        )
        regularizers.add_penalty(self, "pointwise", pointwise, self.pointwise_regularizer)
        pointwise = pointwise.astype(y.dtype)
        y = rows_dot(y, pointwise[0, 0])
        return _bias_and_activation(self, y, self.filters)


def _bias_and_activation(layer, y, size: int):
    """``activation(y + bias)`` with ``layer``'s activation and, if ``use_bias``, its bias.

    The output step of every convolution here: the learned ``bias`` ``(size,)`` is
    made (and regularized) in ``layer``'s scope.
    """
    if layer.use_bias:
        bias = layer.param("bias", initializers.get(layer.bias_initializer), (size,))
        regularizers.add_penalty(layer, "bias", bias, layer.bias_regularizer)
        y = y + bias.astype(y.dtype)
    return activations.get(layer.activation)(y)


def _check_depthwise_config(layer) -> None:
    name = type(layer).__name__
    check_positive(name, depth_multiplier=layer.depth_multiplier)
    as_tuple(layer.kernel_size, 2, f"{name} kernel_size")
    strides = as_tuple(layer.strides, 2, f"{name} strides")
    dilation = as_tuple(layer.dilation_rate, 2, f"{name} dilation_rate")
    lookup(layer.padding, {"valid": 0, "same": 1}, kind="padding")
    if max(dilation) > 1 and max(strides) > 1:
        raise ConfigError(
            f"{name} strides {strides} and dilation_rate {dilation} cannot both exceed 1 "
            "(Keras has the same rule); set one of them to 1."
        )


def _depthwise(layer, x, initializer):
    """The depthwise step shared by DepthwiseConv2D and SeparableConv2D (in ``layer``'s scope)."""
    if x.ndim != 4:
        raise ShapeError(
            f"{type(layer).__name__} expects inputs of rank 4 (batch, height, width, channels), "
            f"got shape {x.shape}."
        )
    x = float_inputs(x)
    ksize = as_tuple(layer.kernel_size, 2, "kernel_size")
    strides = as_tuple(layer.strides, 2, "strides")
    dilation = as_tuple(layer.dilation_rate, 2, "dilation_rate")
    padding = layer.padding.lower()
    _check_window_fits(layer, x.shape[1:-1], ksize, dilation, padding)
    kernel = layer.param(
        "depthwise_kernel",
        initializers.get(initializer),
        (*ksize, x.shape[-1], layer.depth_multiplier),
    )
    regularizers.add_penalty(layer, "depthwise", kernel, layer.depthwise_regularizer)
    kernel = kernel.astype(x.dtype)
    return conv_ops.depthwise_conv(
        x,
        kernel,
        strides=strides,
        padding=padding,
        dilation=dilation,
        impl=resolve_impl(layer.impl),
    )


def _check_window_fits(layer, spatial, ksize, dilation, padding) -> None:
    """Raises a `ShapeError` if a 'valid' or 'causal' window does not fit the input."""
    eff = [(k - 1) * d + 1 for k, d in zip(ksize, dilation, strict=True)]
    pads = conv_ops.conv_padding(spatial, ksize, (1,) * len(ksize), dilation, padding)
    if any(n + lo + hi < e for n, (lo, hi), e in zip(spatial, pads, eff, strict=True)):
        raise ShapeError(
            f"{type(layer).__name__} {layer.name or ''} with kernel_size {tuple(ksize)}, "
            f"dilation_rate {tuple(dilation)} and padding '{padding}' got inputs of spatial "
            f"shape {tuple(spatial)}: the output would be empty (Keras raises too). Use "
            "larger inputs, a smaller kernel, or padding='same' here or in the layers before."
        )
