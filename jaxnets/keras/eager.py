"""``compile(run_eagerly=True)``: the training steps run op by op, for debugging with prints.

`EagerEngine` is the single-device engine with its ``compile`` replaced by a
wrapper that calls the step uncompiled, so ``print`` inside a model or a loss
shows values instead of tracers.

Example:
  >>> engine = EagerEngine()
  >>> step = engine.compile(lambda a, b: a + b)
  >>> step(1, 2), step.lower(1, 2).compile() is step, step.cost_analysis()
  (3, True, {})
"""

from __future__ import annotations

from jaxnets.training.engine import LocalEngine


class EagerFunction:
    """A step run op by op, shaped like a jitted function for the loops.

    The loops call ``fn.lower(*args).compile()`` (to report FLOPs) and then the
    executable; here both return this object, whose call runs ``fn`` eagerly.
    """

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)

    def lower(self, *args):
        return self

    def compile(self):
        return self

    def cost_analysis(self):
        return {}

    def memory_analysis(self):
        return None


class EagerEngine(LocalEngine):
    """Runs the steps uncompiled (``compile(run_eagerly=True)``), for debugging with prints."""

    def compile(self, fn, donate_argnums=()):
        key = (fn, donate_argnums)
        if key not in self._compiled:
            self._compiled[key] = EagerFunction(fn)
        return self._compiled[key]
