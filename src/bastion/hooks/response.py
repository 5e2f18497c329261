"""`Response`: a hook's view of the response head going to the client.

It wraps the head bastion is about to send (an origin's, or one bastion made) and edits its
header list in place. Headers are editable during `on_response` only: once the body phase
starts, the head has gone out and edits would be lost, so they raise.
"""

from __future__ import annotations

from bastion.hooks.fields import RESPONSE_RESERVED, HeaderFields
from bastion.http.events import ResponseHead

_SENT = "the response head has been sent; edit headers in on_response"


class Response:
    """The response to a request: its status and header fields."""

    __slots__ = ("_head", "_headers", "_sealed")

    def __init__(self, head: ResponseHead) -> None:
        self._head = head
        self._headers = HeaderFields(head.headers, RESPONSE_RESERVED)
        self._sealed = False

    @property
    def status(self) -> int:
        """The status code the client gets."""
        return self._head.status

    @property
    def headers(self) -> HeaderFields:
        """The response's end-to-end header fields; editable in `on_response`."""
        return self._headers

    def __repr__(self) -> str:
        return f"Response({self.status})"

    # -- for bastion.hooks.invoke -----------------------------------------------------

    def _is_for(self, head: ResponseHead) -> bool:
        return self._head is head

    def _seal(self) -> None:
        """The head is on its way: headers become read-only."""
        if not self._sealed:
            self._sealed = True
            self._headers = HeaderFields(self._head.headers, RESPONSE_RESERVED, _SENT)
