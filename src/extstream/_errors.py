"""The one error type for failed CUDA calls, and the helpers that raise it.

Error contract: every failed CUDA call raises :class:`CudaError`, whose message
reads ``cudaErrorX: explanation (in cudaY)``; bad arguments raise ``TypeError``
or ``ValueError`` naming the value before CUDA is called.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final, NoReturn

from ._backend import cuda as _cuda
from ._public import public

_SUCCESS: Final = _cuda.SUCCESS
_CU_SUCCESS: Final = _cuda.CU_SUCCESS
_NOT_READY: Final = _cuda.NOT_READY

# Statuses whose CUDA text alone leaves the user guessing, with what to do.
_WITHOUT_A_GPU: Final = (
    "to run without a GPU, set EXTSTREAM_BACKEND=sim (extstream's CPU simulator)"
)
_HINTS: Final = {
    3: "in a process forked from one that used CUDA? start it with the 'spawn' method",
    35: "no usable NVIDIA driver was found (CPU-only machine or container without GPU "
    f"access?); {_WITHOUT_A_GPU}",
    100: f"no CUDA-capable device is visible (check CUDA_VISIBLE_DEVICES); {_WITHOUT_A_GPU}",
    900: "the stream is being captured into a CUDA graph: wait after the capture ends",
    999: "the driver reported an unknown error (is the GPU reachable from this container?)",
}


@public
class CudaError(RuntimeError):
    """A CUDA call failed.

    The message reads ``cudaErrorX: explanation (in cudaY)``. Attributes:
    ``status`` (the int CUDA returned), ``name`` (``"cudaErrorX"``), ``call``
    (the CUDA function, or ``None``) and ``explanation``. Pickles intact, also to
    a process without a driver.
    """

    status: int
    name: str
    call: str | None
    explanation: str

    def __init__(
        self,
        status: int,
        call: str | None = None,
        *,
        name: str | None = None,
        explanation: str | None = None,
    ) -> None:
        status = int(status)
        if name is None:
            name = _cuda.error_name(status)
        if explanation is None:
            explanation = _cuda.error_string(status)
            hint = _HINTS.get(status)
            if hint is not None:
                explanation = f"{explanation}; {hint}"
        self.status = status
        self.name = name
        self.call = call
        self.explanation = explanation
        where = f" (in {call})" if call else ""
        super().__init__(f"{name}: {explanation}{where}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.status, self.call, self.name, self.explanation))


def _rebuild(
    cls: type[CudaError], status: int, call: str | None, name: str, explanation: str
) -> CudaError:
    return cls(status, call, name=name, explanation=explanation)


def _name_of(function: Callable[..., Any]) -> str:
    return getattr(function, "__name__", repr(function))


def fail(err: Any, function: Callable[..., Any]) -> NoReturn:
    """Raise :class:`CudaError` for the status *err* that *function* returned."""
    raise CudaError(int(err), _name_of(function))


def call(function: Callable[..., tuple[Any, ...]], *args: Any) -> Any:
    """``function(*args)`` for a CUDA runtime or driver function returning
    ``(err, *results)``.

    Raises :class:`CudaError` naming *function* unless ``err`` is success;
    returns the one result, None for none, a tuple for several.
    """
    result = function(*args)
    err = result[0]
    if err is not _SUCCESS and err is not _CU_SUCCESS:
        fail(err, function)
    if len(result) == 2:
        return result[1]
    return result[1:] if len(result) > 2 else None


def ready(function: Callable[..., tuple[Any, ...]], *args: Any) -> bool:
    """A CUDA query: True on success, False for not ready; :class:`CudaError` otherwise."""
    err = function(*args)[0]
    if err is _SUCCESS:
        return True
    if err is _NOT_READY:
        return False
    fail(err, function)


def refuse_unreadable(ptr: int, what: str) -> NoReturn:
    """The error for a handle that CUDA would dereference and crash on."""
    raise CudaError(
        _cuda.ERROR_INVALID_RESOURCE_HANDLE,
        explanation=f"{ptr:#x} is not a readable address in this process, so it is not a "
        f"CUDA {what} handle",
    )


_unraisable_args_type: Any = None


def report_unraisable(exc: BaseException, message: str, obj: object = None) -> None:
    """Hand *exc* to ``sys.unraisablehook``, as Python does for errors in ``__del__``
    (the default hook prints ``message: repr(obj)`` and the traceback).

    Used where no one can be told otherwise (host callbacks, deferred destroys);
    a hook that raises is ignored, so the thread reporting goes on.
    """
    global _unraisable_args_type
    try:
        if _unraisable_args_type is None:
            _unraisable_args_type = _find_unraisable_args_type()
        report = _unraisable_args_type((type(exc), exc, exc.__traceback__, message, obj))
        sys.unraisablehook(report)
    except BaseException:  # noqa: S110 - the hook failed too: nothing is left to tell
        pass


def _find_unraisable_args_type() -> Any:
    # The hook's argument type is not exported (and the default hook accepts no
    # other): catch one from a throwaway object.
    caught: list[Any] = []
    hook = sys.unraisablehook
    sys.unraisablehook = caught.append

    class _Probe:
        def __del__(self) -> None:
            raise RuntimeError

    try:
        _Probe()
    finally:
        sys.unraisablehook = hook
    return type(caught[0])
