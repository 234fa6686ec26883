"""Chat moderation rules, one module per concern:

- `terms`: blocked terms and their matcher
- `links`: linked domains and the allow-list
- `limits`: rate limit, flood detector, duplicate window, slow mode
- `mutes`: timeouts and bans
- `chat`: shield mode and the one function that decides a chat message

Pure: no I/O, no asyncio, no module state. Every time is a parameter `now` in seconds.
The stateful pieces (limiters, mute book) are plain in-memory objects that an adapter owns
per node and feeds from the database or Redis; they bound their own memory. The review queue
of held and reported messages is kept in PostgreSQL (`livecart.chat.store`), where one
statement decides each claim and decision for every node at once.
See docs/moderation.md for the semantics chosen where the specification is silent.
"""
