"""Run Python when the GPU reaches a point in a stream.

Run: python examples/host_callbacks.py   (a GPU; anywhere on the CPU simulator:
EXTSTREAM_BACKEND=sim python examples/host_callbacks.py)
"""

import threading
import time

import extstream

stream = extstream.Stream()
log: list[str] = []
finished = threading.Event()

# hold_stream=True (the default): work queued after the callback waits for it.
for step in range(3):
    stream.launch_host_func(log.append, f"step {step} reached")

# add_callback passes (stream, status, arg), like CuPy's.
stream.add_callback(lambda s, status, arg: log.append(f"{arg} (status {status})"), "all done")

# hold_stream=False: a notification; the GPU does not wait for Python.
stream.launch_host_func(lambda _: finished.set(), None, hold_stream=False)

started = time.perf_counter()
stream.synchronize()
assert finished.wait(5)
print("\n".join(log))
print(f"callbacks ran in order in {(time.perf_counter() - started) * 1e3:.2f} ms")
stream.close()
