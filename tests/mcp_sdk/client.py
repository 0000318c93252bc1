"""The official MCP Python SDK client against the FastMCP server in server.py.

Three ways in, one per subcommand, and `all` to run them in one process (the SDK's import
takes most of the time); each check prints one line, and the command exits 0 when all
passed, or prints what went wrong and exits 1:

  sdk    --url U --issuer I --agent A --key PEM [--alg ES256]
         `PrivateKeyJWTOAuthProvider`: the SDK finds the broker through the server's RFC 9728
         metadata, signs its own RFC 7523 assertion and gets a token (SEP-1046), then calls
         the tools. Expects the tool to report sub = A and aud = U.
  plain  --url U --agent A --resource R
         No auth configured at all (the `agent-sts proxy` case): U is the proxy. Expects the
         tool to report sub = A and aud = R (the real server behind the proxy).
  bearer --url U --token-env NAME --expect ok|refused [--agent A]
         A static `Authorization: Bearer <$NAME>` header. `refused` expects the server to
         answer 401 invalid_token (e.g. a token issued for another audience, RFC 8707); `ok`
         expects the calls to pass.
  all    --url U --proxy-url P --issuer I --agent A --key PEM --token-env N --other-token-env O
         sdk against U; plain through P; bearer refused with $O; bearer ok with $N.
"""

import argparse
import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.auth.extensions.client_credentials import (
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken


class MemoryStorage:
    """The SDK's `TokenStorage` protocol, in memory (nothing written to disk)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class Failed(Exception):
    pass


async def call_tools(url: str, http: httpx2.AsyncClient) -> dict:
    """Initialize a session, list the tools, call `add` and `whoami`; return whoami's answer."""
    async with http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            if not {"add", "whoami"} <= tools:
                raise Failed(f"tools/list returned {sorted(tools)}, expected add and whoami")
            added = await client.call_tool("add", {"a": 2, "b": 3})
            if added.is_error or (added.structured_content or {}).get("result") != 5:
                raise Failed(f"add(2, 3) returned {added}")
            who = await client.call_tool("whoami", {})
            if who.is_error or not who.structured_content:
                raise Failed(f"whoami returned {who}")
            return who.structured_content


def expect_claims(who: dict, sub: str, aud: str) -> None:
    if who.get("sub") != sub or who.get("aud") != aud:
        raise Failed(f"the server saw sub={who.get('sub')!r} aud={who.get('aud')!r}, expected {sub!r} and {aud!r}")


def http_client(**kwargs) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(timeout=httpx2.Timeout(10.0), trust_env=False, **kwargs)


async def run_sdk(url: str, issuer: str, agent: str, key: str, alg: str) -> str:
    with open(key, encoding="ascii") as f:
        pem = f.read()
    params = SignedJWTParameters(issuer=agent, subject=agent, signing_key=pem, signing_algorithm=alg)
    provider = PrivateKeyJWTOAuthProvider(
        server_url=url,
        storage=MemoryStorage(),
        client_id=agent,
        assertion_provider=params.create_assertion_provider(),
        issuer=issuer,
    )
    who = await call_tools(url, http_client(auth=provider))
    expect_claims(who, agent, url)
    return f"sdk: PrivateKeyJWTOAuthProvider got a token from {issuer}; whoami = {json.dumps(who, sort_keys=True)}"


async def run_plain(url: str, agent: str, resource: str) -> str:
    who = await call_tools(url, http_client())
    expect_claims(who, agent, resource)
    return f"plain: no auth configured, through {url}; whoami = {json.dumps(who, sort_keys=True)}"


async def run_bearer(url: str, token: str, expect: str, agent: str | None) -> str:
    http = http_client(headers={"Authorization": f"Bearer {token}"})
    if expect == "ok":
        who = await call_tools(url, http)
        if agent:
            expect_claims(who, agent, url)
        return f"bearer: accepted; whoami = {json.dumps(who, sort_keys=True)}"
    # `refused`: speak the first MCP message by hand so the status is seen as it is.
    async with http:
        r = await http.post(
            url,
            headers={"Accept": "application/json, text/event-stream", "Content-Type": "application/json"},
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "agent-sts-e2e", "version": "0"},
                },
            },
        )
    challenge = r.headers.get("www-authenticate", "")
    if r.status_code != 401 or "invalid_token" not in challenge:
        raise Failed(f"expected 401 with error=\"invalid_token\", got {r.status_code} {challenge!r}: {r.text[:300]}")
    return f"bearer: refused with 401 ({challenge[:80]}...)"


def env_token(name: str) -> str:
    token = os.environ.get(name, "")
    if not token:
        raise Failed(f"environment variable {name} holds no token")
    return token


async def run_all(args: argparse.Namespace) -> list[str]:
    """Every check in one process (the SDK's import is the slow part)."""
    return [
        await run_sdk(args.url, args.issuer, args.agent, args.key, args.alg),
        await run_plain(args.proxy_url, args.agent, args.url),
        await run_bearer(args.url, env_token(args.other_token_env), "refused", None),
        await run_bearer(args.url, env_token(args.token_env), "ok", args.agent),
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("sdk")
    p.add_argument("--url", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--alg", default="ES256")
    p = sub.add_parser("plain")
    p.add_argument("--url", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--resource", required=True)
    p = sub.add_parser("bearer")
    p.add_argument("--url", required=True)
    p.add_argument("--token-env", required=True, help="environment variable holding the token")
    p.add_argument("--expect", choices=["ok", "refused"], required=True)
    p.add_argument("--agent")
    p = sub.add_parser("all")
    p.add_argument("--url", required=True)
    p.add_argument("--proxy-url", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--alg", default="ES256")
    p.add_argument("--token-env", required=True)
    p.add_argument("--other-token-env", required=True)
    args = parser.parse_args()

    async def run() -> list[str]:
        if args.mode == "sdk":
            return [await run_sdk(args.url, args.issuer, args.agent, args.key, args.alg)]
        if args.mode == "plain":
            return [await run_plain(args.url, args.agent, args.resource)]
        if args.mode == "bearer":
            return [await run_bearer(args.url, env_token(args.token_env), args.expect, args.agent)]
        return await run_all(args)

    try:
        for line in asyncio.run(asyncio.wait_for(run(), timeout=60)):
            print(line)
        return 0
    except Failed as e:
        print(f"FAILED ({args.mode}): {e}", file=sys.stderr)
    except BaseException as e:  # the SDK's own errors arrive wrapped in exception groups
        print(f"FAILED ({args.mode}): {type(e).__name__}: {e}", file=sys.stderr)
        for inner in leaves(e):
            print(f"  caused by {type(inner).__name__}: {inner}", file=sys.stderr)
    return 1


def leaves(e: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    inner = getattr(e, "exceptions", None)
    if not inner:
        return [e]
    return [leaf for sub in inner for leaf in leaves(sub)]


if __name__ == "__main__":
    sys.exit(main())
