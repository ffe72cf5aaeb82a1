"""The official Python MCP SDK (PyPI `mcp`, pinned) against `host serve`.

usage: client.py URL ALB_HEADER MODE
MODE: auto (negotiates 2026-07-28 when offered), legacy (initialize, 2025-11-25),
plain (legacy, and declares no elicitation: the URL comes in the result).
Prints one line per step; when the user must consent it prints
`CONSENT <url>` and waits for a line on stdin (the test consents meanwhile).
"""

import asyncio
import json
import sys

import mcp.types as types
from mcp import Client, MCPError, UrlElicitationRequiredError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

URL, HEADER, MODE = sys.argv[1], sys.argv[2], sys.argv[3]


def say(*words):
    print(*words, flush=True)


async def consent(url):
    say("CONSENT", url)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def on_elicit(context, params):
    if isinstance(params, types.ElicitRequestURLParams):
        await consent(params.url)
        return types.ElicitResult(action="accept")
    return types.ElicitResult(action="decline")


async def main():
    async with create_mcp_http_client(headers={"x-amzn-oidc-data": HEADER}) as http:
        transport = streamable_http_client(URL, http_client=http)
        options = {} if MODE == "plain" else {"elicitation_callback": on_elicit}
        mode = "auto" if MODE == "auto" else "legacy"
        async with Client(transport, mode=mode, **options) as client:
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
                url = UrlElicitationRequiredError.from_error(e.error).elicitations[0].url
                say("ELICITATION-ERROR")
                await consent(url)
                result = await client.call_tool("github-issues", {})
            if result.is_error:
                say("RESULT-WITH-URL")
                url = result.structured_content["authorization_required"]["authorization_url"]
                assert url in result.content[0].text
                await consent(url)
                result = await client.call_tool("github-issues", {})
            assert not result.is_error, result
            say("DATA", result.structured_content["issues"][0]["title"])


asyncio.run(main())
