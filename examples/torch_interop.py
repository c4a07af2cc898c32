"""Wrap a torch stream, order work between two streams with an event, time it.

Run: python examples/torch_interop.py   (needs a GPU and torch)
"""

import torch

import extstream

producer = torch.cuda.Stream()
consumer = torch.cuda.Stream()
x = torch.zeros(1 << 24, device="cuda")
y = torch.empty_like(x)

# Any object with __cuda_stream__ (torch, CuPy, numba, cuda.core) wraps directly;
# the device is taken from the stream itself.
p, c = extstream.as_stream(producer), extstream.as_stream(consumer)
print("wrapped:", p, c)

start = extstream.Event(timing=True)
start.record(p)
with torch.cuda.stream(producer):
    x.fill_(3.0)
ready = p.record()  # a fresh event, recorded after the fill
c.wait_event(ready)  # the copy below waits for the fill, not for the whole device
with torch.cuda.stream(consumer):
    y.copy_(x)
end = extstream.Event(timing=True)
end.record(c)
c.synchronize()
assert bool((y == 3.0).all())
print(f"fill + ordered copy took {start.elapsed_time(end):.3f} ms on the GPU")

# extstream's current stream is per thread and per asyncio task.
with c:
    assert extstream.get_current_stream() == c
print("ok")
