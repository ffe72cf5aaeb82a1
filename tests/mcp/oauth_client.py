"""The official Python MCP SDK's own OAuth client (`OAuthClientProvider`)
signing in to `host serve` by itself, as a desktop client does.

usage: oauth_client.py MCP_URL CALLBACK_PORT [CLIENT_METADATA_URL]
With CLIENT_METADATA_URL the client is known by that metadata document
(CIMD); without it, it registers dynamically. It prints `AUTHORIZE <url>`
for the person to open in a browser and takes the redirect on its own
loopback server (http://127.0.0.1:CALLBACK_PORT/callback), then one line per
step; when the user must consent to a tool it prints `CONSENT <url>` and
waits for a line on stdin.
"""

import asyncio
import json
import logging
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import mcp.types as types
from mcp import Client, MCPError, UrlElicitationRequiredError
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientMetadata

URL, PORT = sys.argv[1], int(sys.argv[2])
if os.environ.get("AIRLOCK_CLIENT_DEBUG"):
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
METADATA_URL = sys.argv[3] if len(sys.argv) > 3 else None
REDIRECT = f"http://127.0.0.1:{PORT}/callback"
answers = []
arrived = threading.Event()


def say(*words):
    print(*words, flush=True)


class Callback(BaseHTTPRequestHandler):
    def do_GET(self):
        answers.append(parse_qs(urlparse(self.path).query))
        arrived.set()
        body = b"<!doctype html><title>Signed in</title><h1>Signed in</h1><p>Return to the application.</p>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Memory:
    def __init__(self):
        self.tokens = None
        self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, info):
        self.client = info


async def open_in_browser(url):
    say("AUTHORIZE", url)


async def redirected():
    await asyncio.get_running_loop().run_in_executor(None, arrived.wait)
    arrived.clear()
    q = answers.pop()
    first = lambda k: q[k][0] if k in q else None  # noqa: E731
    if first("error"):
        say("DENIED", first("error"))
        sys.exit(3)
    return AuthorizationCodeResult(code=first("code"), state=first("state"), iss=first("iss"))


async def consent(url):
    say("CONSENT", url)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def on_elicit(context, params):
    if isinstance(params, types.ElicitRequestURLParams):
        await consent(params.url)
        return types.ElicitResult(action="accept")
    return types.ElicitResult(action="decline")


async def main():
    server = HTTPServer(("127.0.0.1", PORT), Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    storage = Memory()
    provider = OAuthClientProvider(
        server_url=URL,
        client_metadata=OAuthClientMetadata(
            client_name="Python SDK test client",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=open_in_browser,
        callback_handler=redirected,
        client_metadata_url=METADATA_URL,
    )
    async with create_mcp_http_client(auth=provider) as http:
        async with Client(streamable_http_client(URL, http_client=http), elicitation_callback=on_elicit) as client:
            say("VERSION", client.protocol_version)
            tools = sorted(t.name for t in (await client.list_tools()).tools)
            say("TOOLS", json.dumps(tools))
            result = await client.call_tool("text-stats", {"text": "a b a", "top": 1})
            assert not result.is_error, result
            say("STATS", json.dumps(result.structured_content))
            try:
                result = await client.call_tool("github-issues", {})
            except MCPError as e:
                assert e.code == types.URL_ELICITATION_REQUIRED, e
                await consent(UrlElicitationRequiredError.from_error(e.error).elicitations[0].url)
                result = await client.call_tool("github-issues", {})
            assert not result.is_error, result
            say("DATA", result.structured_content["issues"][0]["title"])
            say("CLIENT", storage.client.client_id)


asyncio.run(main())
