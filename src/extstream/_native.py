"""libc through ctypes: semaphores CUDA can post without Python, a safe address probe,
and the one way a Python function becomes a C host function.

A host function that is libc's ``sem_post`` runs on CUDA's thread without the
GIL, so it can never deadlock with Python and stays safe while the interpreter
shuts down. Semaphores live in ``malloc``'d memory that is never freed: CUDA may
post one after Python has let go of everything. Linux only, as the package's
classifiers say.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

_SEM_BYTES: Final = 64  # sizeof(sem_t) is 32 on 64-bit glibc; leave room


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


_libc = ctypes.CDLL(None, use_errno=True)
_malloc = _libc.malloc
_malloc.argtypes = (ctypes.c_size_t,)
_malloc.restype = ctypes.c_void_p
_sem_init = _libc.sem_init
_sem_init.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint)
# sem_post and sem_trywait never block: called with the GIL held, they spare
# the dispatcher a GIL hand-off per callback. sem_wait blocks: GIL released.
_libc_holding_gil = ctypes.PyDLL(None)
_sem_post = _libc_holding_gil.sem_post
_sem_post.argtypes = (ctypes.c_void_p,)
_sem_trywait = _libc_holding_gil.sem_trywait
_sem_trywait.argtypes = (ctypes.c_void_p,)
_sem_wait = _libc.sem_wait
_sem_wait.argtypes = (ctypes.c_void_p,)
_sem_timedwait = _libc.sem_timedwait
_sem_timedwait.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
_write = _libc.write
_write.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
_write.restype = ctypes.c_ssize_t
#: The C address of ``sem_post``: a host function that posts the semaphore it is given.
SEM_POST_ADDRESS: Final[int] = ctypes.cast(_sem_post, ctypes.c_void_p).value or 0


def new_semaphore() -> int:
    """A fresh semaphore (count 0) in memory that is never freed; its address."""
    address = _malloc(_SEM_BYTES)
    if not address or _sem_init(address, 0, 0) != 0:
        raise MemoryError("cannot create a semaphore")
    return int(address)


def post(semaphore: int) -> None:
    """Add one to *semaphore* (what CUDA does when it runs ``sem_post`` as a host function)."""
    _sem_post(semaphore)


def try_take(semaphore: int) -> bool:
    """Take one from *semaphore* if it has one, without waiting."""
    return bool(_sem_trywait(semaphore) == 0)


def _raise_unless_interrupted(what: str) -> None:
    code = ctypes.get_errno()
    if code != errno.EINTR:  # a signal arrived: Python handles it later, the wait goes on
        raise OSError(code, f"{what}: {os.strerror(code)}")


def take(semaphore: int) -> None:
    """Take one from *semaphore*, waiting as long as needed (the GIL is released)."""
    while _sem_wait(semaphore) != 0:
        _raise_unless_interrupted("sem_wait")


def take_within(semaphore: int, seconds: float) -> bool:
    """Take one from *semaphore*, waiting at most *seconds* (GIL released); False on timeout."""
    deadline = time.time() + seconds  # sem_timedwait measures CLOCK_REALTIME
    spec = _Timespec(int(deadline), int((deadline % 1) * 1e9))
    while _sem_timedwait(semaphore, ctypes.addressof(spec)) != 0:
        if ctypes.get_errno() == errno.ETIMEDOUT:
            return False
        _raise_unless_interrupted("sem_timedwait")
    return True


_HOST_FN_TYPE: Final = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_host_fn_thunks: list[Any] = []  # a thunk must outlive every launch that may call it


def host_function(func: Callable[[int], None]) -> int:
    """The address of a C host function that calls ``func(user_data)``; lives for good.

    ctypes makes the C function: it takes the GIL and calls *func* with the
    ``userData`` int given at launch.
    """
    thunk = _HOST_FN_TYPE(func)
    _host_fn_thunks.append(thunk)
    address = ctypes.cast(thunk, ctypes.c_void_p).value
    assert address is not None
    return address


def call_host_function(address: int, user_data: int) -> None:
    """Call the C host function at *address* with *user_data* (the simulator's "GPU" does)."""
    _HOST_FN_TYPE(address)(user_data)


_probe_lock = threading.Lock()
_probe_pipe: tuple[int, int] | None = None


def _after_fork_in_child() -> None:
    # A forked child gets its own pipe (sharing one would mix the processes'
    # bytes) and a fresh lock (another thread may have held it at the fork).
    global _probe_pipe, _probe_lock
    _probe_pipe = None
    _probe_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def address_is_readable(address: int, size: int = 16) -> bool:
    """Whether *size* bytes at *address* can be read in this process, without touching them.

    write(2) from the address into a pipe: the kernel reports EFAULT for
    unmapped memory instead of faulting, so nothing can crash here.
    """
    global _probe_pipe
    with _probe_lock:
        if _probe_pipe is None:
            _probe_pipe = os.pipe()
        reader, writer = _probe_pipe
        written = _write(writer, address, size)
        if written <= 0:
            return False
        os.read(reader, written)
        return True
