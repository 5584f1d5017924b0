"""The fitted state of a probe: set in one place, removed as a whole, pickled device-free.

Every attribute ``fit`` finds (``name_``, and the few private ones in
``_PRIVATE_FIT_STATE``) is recorded through :meth:`FittedStateMixin._set_fitted`;
a ``fit`` that does not finish removes them all (:meth:`_forget_fit`), so a
probe is either fitted from its last finished ``fit`` or not fitted at all.
"""

from __future__ import annotations

import copy

__all__ = ["FittedStateMixin"]


class FittedStateMixin:
    """Fitted attributes: one setter, one eraser, and a pickle that always loads on a CPU machine.

    Examples
    --------
    >>> from skprobe import LinearProbeClassifier
    >>> probe = LinearProbeClassifier()
    >>> probe._set_fitted(classes_=[0, 1]); probe._forget_fit(); hasattr(probe, "classes_")
    False
    """

    #: Fitted state without a trailing underscore (removed with the fitted attributes by :meth:`_forget_fit`).
    _PRIVATE_FIT_STATE = ("_sigmoid_outputs", "_y_dtype")

    #: The former private name of ``target_type_``, for code and probe files written before it.
    _target_kind = property(lambda self: self.target_type_, lambda self, value: setattr(self, "target_type_", value))

    @classmethod
    def _is_fitted_name(cls, name: str) -> bool:
        return (name.endswith("_") and not name.startswith("__")) or name in cls._PRIVATE_FIT_STATE

    def _set_fitted(self, **attributes) -> None:
        """Set fitted attributes: the one way ``fit`` and its hooks record what they found."""
        for name, value in attributes.items():
            if not self._is_fitted_name(name):
                raise AttributeError(f"{name!r} is not a fitted attribute (name_ or one of {self._PRIVATE_FIT_STATE})")
            setattr(self, name, value)

    def _forget_fit(self) -> None:
        """Remove every fitted attribute (``name_``) and the private fitted state: the probe is not fitted."""
        for name in list(vars(self)):
            if self._is_fitted_name(name):
                delattr(self, name)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        module = state.get("module_")
        if module is not None and any(t.device.type != "cpu" for t in module.state_dict().values()):
            state["module_"] = copy.deepcopy(module).cpu()  # a GPU-fitted probe unpickles on a CPU machine
        return state

    def __setstate__(self, state: dict) -> None:
        if "_target_kind" in state:  # pickled before target_type_ was public
            state = {**state, "target_type_": state["_target_kind"]}
            del state["_target_kind"]
        super().__setstate__(state)
