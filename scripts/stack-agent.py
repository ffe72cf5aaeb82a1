"""The local stack's agent: the official Python MCP SDK (PyPI `mcp`) calling a
tool on `host serve` for a user it signs in with the device flow (RFC 8628).

usage: stack-agent.py MCP_URL IDP_ISSUER [TOOL]

Prints `SIGN-IN <url>`: open it, sign in, approve; the agent polls for the
token. When the tool needs the user's consent it prints `CONSENT <url>`:
open it, approve, and press Enter here. Then it prints `DATA <json>`.
"""

import asyncio
import json
import sys
import time

import urllib.error
import urllib.parse
import urllib.request

import mcp.types as types
from mcp import Client, MCPError, UrlElicitationRequiredError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

CLIENT_ID = "airlock-agent"


def say(*words):
    print(*words, flush=True)


def fetch(url, form=None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with urllib.request.urlopen(url, data=data, timeout=15) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def sign_in(issuer):
    meta = fetch(f"{issuer}/.well-known/openid-configuration")
    start = fetch(meta["device_authorization_endpoint"], {"client_id": CLIENT_ID, "scope": "openid"})
    say("SIGN-IN", start["verification_uri_complete"])
    interval = start.get("interval", 5)
    deadline = time.time() + start.get("expires_in", 600)
    while time.time() < deadline:
        time.sleep(interval)
        answer = fetch(
            meta["token_endpoint"],
            {
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": start["device_code"],
                "client_id": CLIENT_ID,
            },
        )
        if "id_token" in answer:
            return answer["id_token"]
        if answer.get("error") == "slow_down":
            interval += 5
        elif answer.get("error") != "authorization_pending":
            raise SystemExit(f"sign-in failed: {answer.get('error')}")
    raise SystemExit("sign-in timed out")


async def consent(url):
    say("CONSENT", url)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def on_elicit(context, params):
    if isinstance(params, types.ElicitRequestURLParams):
        await consent(params.url)
        return types.ElicitResult(action="accept")
    return types.ElicitResult(action="decline")


async def main(url, issuer, tool):
    token = sign_in(issuer)
    say("SIGNED-IN")
    async with create_mcp_http_client(headers={"authorization": f"Bearer {token}"}) as http:
        async with Client(
            streamable_http_client(url, http_client=http), elicitation_callback=on_elicit
        ) as client:
            try:
                result = await client.call_tool(tool, {})
            except MCPError as e:
                if e.code != types.URL_ELICITATION_REQUIRED:
                    raise
                await consent(UrlElicitationRequiredError.from_error(e.error).elicitations[0].url)
                result = await client.call_tool(tool, {})
            if result.is_error and "authorization_required" in (result.structured_content or {}):
                await consent(result.structured_content["authorization_required"]["authorization_url"])
                result = await client.call_tool(tool, {})
            if result.is_error:
                raise SystemExit(f"the call failed: {result.content[0].text}")
            say("DATA", json.dumps(result.structured_content))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "github-issues"))
