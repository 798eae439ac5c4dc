"""Redis and what goes in it: the store and its Lua scripts, key names, connections, the embedded server,
and the msgpack codec."""
