"""What ``with`` means: on a stream, make it current (CuPy's meaning); on an event,
closing is deprecated in favour of ``contextlib.closing``."""

from __future__ import annotations

import contextlib

import pytest

import extstream
from extstream import Event, Stream

pytestmark = pytest.mark.extstream_gpu


def test_with_a_stream_makes_it_current_and_leaves_it_open(extstream_stream: Stream) -> None:
    with extstream_stream as s:
        assert extstream.get_current_stream() is s
    assert not extstream_stream.closed


def test_with_an_event_warns_that_closing_is_deprecated_and_still_closes() -> None:
    expected = pytest.warns(DeprecationWarning, match=r"contextlib\.closing\(event\)")
    with expected as caught, Event() as event:
        assert not event.closed
    assert event.closed
    assert caught[0].filename == __file__  # points at the caller's 'with'


def test_contextlib_closing_closes_an_event_without_a_warning() -> None:
    with contextlib.closing(Event()) as event:  # filterwarnings = error: no warning here
        assert not event.closed
    assert event.closed
