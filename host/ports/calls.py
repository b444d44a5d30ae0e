"""Backend calls from the server's loop: inline for a fast backend, or started without
blocking the loop (a worker thread, or the backend's own queue) for one that waits on a
device."""

from __future__ import annotations

import asyncio

from copperline.host.backend import Backend, BackendError
from copperline.host.ports.protocol import PortsError


class BackendCalls:
    """How the server calls ``backend``.

    ``blocking``: run calls in a worker thread (for backends that wait on a device);
    otherwise they are made inline on the loop (fast, for the soft VM).
    """

    def __init__(self, backend: Backend, blocking: bool) -> None:
        self.backend = backend
        self.blocking = blocking
        self.loop: asyncio.AbstractEventLoop | None = None
        self._executor = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def _submit(self, fn, *args) -> asyncio.Future:
        """Start a backend call without blocking the loop; a Future of its result.

        A backend with ``submit(name, *args)`` (soft: queued straight to its timing
        thread) is called through it; any other runs in a worker thread. Each layer of
        coroutines and worker threads costs loop turns and GIL hand-overs, which under
        load were most of a ``status``'s latency."""
        loop = self.loop
        out = loop.create_future()
        submit = getattr(self.backend, "submit", None)
        if submit is not None:
            cf = submit(fn.__name__, *args)
        else:
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="backend")
            cf = self._executor.submit(fn, *args)

        def settle(cf):
            if out.done():
                return
            if cf.cancelled():
                out.cancel()
            elif cf.exception() is not None:
                out.set_exception(cf.exception())
            else:
                out.set_result(cf.result())

        def on_done(cf):
            try:
                loop.call_soon_threadsafe(settle, cf)
            except RuntimeError:     # the loop is closed (shutdown)
                pass
        cf.add_done_callback(on_done)
        timeout = getattr(self.backend, "command_timeout", None)
        if timeout:
            def expire():
                if not out.done():
                    out.set_exception(BackendError("TIMEOUT", f"the {self.backend.name} backend "
                                                   f"did not answer within {timeout:g} s"))
            handle = loop.call_later(timeout, expire)
            out.add_done_callback(lambda _: handle.cancel())
        return out

    async def raw(self, fn, *args):
        """Await a backend call; BackendError passes through."""
        if not self.blocking:
            return fn(*args)
        return await self._submit(fn, *args)

    def call(self, fn, *args):
        """Run a backend call: inline (returns the value) or started (returns a Future)."""
        try:
            if not self.blocking:
                return fn(*args)
        except BackendError as exc:
            raise PortsError(exc.code, exc.message) from None
        return self._submit(fn, *args)

    async def wrap(self, fn, *args):
        """Await a backend call; BackendError becomes PortsError."""
        try:
            return await self.raw(fn, *args)
        except BackendError as exc:
            raise PortsError(exc.code, exc.message) from None

    def then(self, value, fn):
        """Apply ``fn`` to a :meth:`call` result, whether a value or a Future; for a Future,
        a Future of ``fn``'s result (BackendError becomes PortsError). ``fn`` runs even when
        the request was cancelled meanwhile (its client went away): the call it sent was
        made, and its bookkeeping (e.g. a loaded program's registers) must follow."""
        if not isinstance(value, asyncio.Future):
            return fn(value)
        out = self.loop.create_future()

        def step(f):
            if f.cancelled():
                out.cancel()
                return
            exc = f.exception()
            if exc is None:
                try:
                    result, exc = fn(f.result()), None
                except BaseException as e:       # noqa: BLE001 - handed to the request
                    exc = e
            if isinstance(exc, BackendError):
                exc = PortsError(exc.code, exc.message)
            if out.done():
                return
            if exc is None:
                out.set_result(result)
            else:
                out.set_exception(exc)
        value.add_done_callback(step)
        return out
