"""livecart-client: the Python client of livecart (SPEC §14).

    client = LivecartClient("ws://127.0.0.1:8000/ws", token=token)
    await client.connect()
    room = await client.join(session_id)
    room.on("chat", lambda event: print(event.name, event.text))
    offset = await room.chat("hello")
    order = await room.buy(offer_id, 1)  # LivecartError(code="sold_out") when refused
"""

from . import messages
from .client import (
    Gap,
    LivecartClient,
    Message,
    Offline,
    Position,
    Resync,
    Room,
    kind,
    to_message,
    token_expiry,
)
from .errors import LivecartError

__all__ = [
    "Gap",
    "LivecartClient",
    "LivecartError",
    "Message",
    "Offline",
    "Position",
    "Resync",
    "Room",
    "kind",
    "messages",
    "to_message",
    "token_expiry",
]
__version__ = "0.1.0"
