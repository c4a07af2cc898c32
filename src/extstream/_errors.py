"""The one error type for failed CUDA calls, and the helper that raises it."""

from __future__ import annotations

from typing import Any, NoReturn

from ._backend import cuda as _cuda

# Statuses whose CUDA text alone leaves the user guessing, with what to do.
_NO_GPU_STATUSES = {
    3: "in a process forked from one that used CUDA? start it with the 'spawn' method",
    35: "no usable NVIDIA driver was found (CPU-only machine or container without GPU access?)",
    100: "no CUDA-capable device is visible (check CUDA_VISIBLE_DEVICES)",
    900: "the stream is being captured into a CUDA graph: wait after the capture ends",
    999: "the driver reported an unknown error (is the GPU reachable from this container?)",
}


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
        name: str | None = None,
        explanation: str | None = None,
    ) -> None:
        status = int(status)
        if name is None:
            name = _cuda.error_name(status)
        if explanation is None:
            explanation = _cuda.error_string(status)
            hint = _NO_GPU_STATUSES.get(status)
            if hint is not None:
                explanation = f"{explanation}; {hint}"
        self.status = status
        self.name = name
        self.call = call
        self.explanation = explanation
        where = f" (in {call})" if call else ""
        super().__init__(f"{name}: {explanation}{where}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.call, self.name, self.explanation))


def raise_cuda_error(err: Any, call: str) -> NoReturn:
    """Raise :class:`CudaError` for the status *err* returned by *call*."""
    raise CudaError(int(err), call)
