"""The current stream in threads and asyncio tasks, with handles that never reach CUDA.

Only the device count does (a device's current stream exists once the device is
known to exist), so these run where a GPU or the simulator is: ``gpu``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable

import pytest

import extstream.testing
from extstream import ExternalStream, get_current_stream

from .conftest import fake_stream, run_python

DEV = 0
S1, S2, S3 = (fake_stream(0x7F00_0000_1000 + 8 * i, DEV) for i in range(3))
pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("no_debug_checks")]


def in_fresh_context(test: Callable[[], None]) -> Callable[[], None]:
    """Run the test in an empty context, so use() in one test never leaks into another."""
    return functools.wraps(test)(lambda: contextvars.Context().run(test))


def default() -> ExternalStream:
    return ExternalStream(0, DEV)


@in_fresh_context
def test_default_is_the_legacy_stream() -> None:
    current = get_current_stream(DEV)
    assert current.ptr == 0 and current.device_id == DEV
    assert get_current_stream(DEV) is current  # cached: no allocation per call


@in_fresh_context
def test_with_sets_and_restores() -> None:
    with S1 as entered:
        assert entered is S1
        assert get_current_stream(DEV) is S1
    assert get_current_stream(DEV) == default()


@in_fresh_context
def test_nested_and_reentrant_blocks_restore_each_level() -> None:
    with S1:
        with S2:
            with S1:
                assert get_current_stream(DEV) is S1
            assert get_current_stream(DEV) is S2
        assert get_current_stream(DEV) is S1
    assert get_current_stream(DEV) == default()


@in_fresh_context
def test_leaving_with_restores_what_use_made_current() -> None:
    S1.use()
    with S2:
        assert get_current_stream(DEV) is S2
    assert get_current_stream(DEV) is S1


@in_fresh_context
def test_use_inside_with_lasts_until_the_block_ends() -> None:
    with S1:
        assert S2.use() is S2
        assert get_current_stream(DEV) is S2
    assert get_current_stream(DEV) == default()


@in_fresh_context
def test_out_of_order_exit_raises_and_changes_nothing() -> None:
    S1.__enter__()
    S2.__enter__()
    with pytest.raises(RuntimeError, match="out of order"):
        S1.__exit__(None, None, None)
    assert get_current_stream(DEV) is S2
    S2.__exit__(None, None, None)
    S1.__exit__(None, None, None)
    assert get_current_stream(DEV) == default()


@in_fresh_context
def test_exit_without_enter_raises() -> None:
    with pytest.raises(RuntimeError, match="out of order"):
        S3.__exit__(None, None, None)


@pytest.mark.multi_gpu(2)
@in_fresh_context
def test_devices_are_independent() -> None:
    other = ExternalStream(0x7F00_0000_2000, 1)
    with S1, other:
        assert get_current_stream(DEV) is S1
        assert get_current_stream(1) is other
    with other:
        assert get_current_stream(DEV) == default()


@in_fresh_context
def test_new_threads_start_from_the_default() -> None:
    seen: list[ExternalStream] = []
    with S1:
        worker = threading.Thread(target=lambda: seen.append(get_current_stream(DEV)))
        worker.start()
        worker.join()
        assert get_current_stream(DEV) is S1
    assert seen == [default()]


@in_fresh_context
def test_threads_do_not_see_each_others_streams() -> None:
    barrier = threading.Barrier(2)
    seen: dict[str, ExternalStream] = {}

    def work(name: str, stream: ExternalStream) -> None:
        with stream:
            barrier.wait()
            seen[name] = get_current_stream(DEV)
            barrier.wait()

    threads = [threading.Thread(target=work, args=(n, s)) for n, s in (("a", S1), ("b", S2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": S1, "b": S2}


@in_fresh_context
def test_asyncio_tasks_each_see_their_own_stream() -> None:
    # CuPy and torch keep the current stream per thread, so both tasks read the wrong one.
    async def task(stream: ExternalStream, seen: list[ExternalStream]) -> None:
        with stream:
            for _ in range(3):
                await asyncio.sleep(0)
                seen.append(get_current_stream(DEV))

    async def main() -> tuple[list[ExternalStream], list[ExternalStream]]:
        a: list[ExternalStream] = []
        b: list[ExternalStream] = []
        await asyncio.gather(task(S1, a), task(S2, b))
        return a, b

    a, b = asyncio.run(main())
    assert a == [S1] * 3 and b == [S2] * 3


@in_fresh_context
def test_task_inherits_the_block_and_its_changes_do_not_leak_back() -> None:
    async def child() -> ExternalStream:
        inherited = get_current_stream(DEV)
        S3.use()
        return inherited

    async def main() -> tuple[ExternalStream, ExternalStream]:
        with S1:
            inherited = await asyncio.create_task(child())
            return inherited, get_current_stream(DEV)

    inherited, after = asyncio.run(main())
    assert inherited is S1 and after is S1


@pytest.mark.parametrize(("bad", "error"), [(-1, ValueError), ("0", TypeError), (True, TypeError)])
def test_bad_device_arguments(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        get_current_stream(bad)  # type: ignore[arg-type]


@pytest.mark.gpu
def test_a_device_that_does_not_exist_is_refused() -> None:
    missing = extstream.testing.devices()[0]
    with pytest.raises(ValueError, match=f"device_id={missing}, but this process sees"):
        get_current_stream(missing)
    with pytest.raises(ValueError, match="this process sees"):
        ExternalStream(0x7F00_0000_3000, missing).use()


def test_per_thread_default_stream_by_environment() -> None:
    result = run_python(
        "import extstream; print(extstream.get_current_stream(0).ptr)",
        env={"EXTSTREAM_PER_THREAD_DEFAULT_STREAM": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
