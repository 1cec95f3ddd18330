"""The sidecar's HTTP face: the aiohttp app, the SSE relay and the server.

Handlers parse and answer; every error leaves in OpenAI's error shape. The API
listens on a loopback address only; metrics have their own port.
"""
