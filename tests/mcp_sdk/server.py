"""A FastMCP server (streamable HTTP) that accepts only agent-sts tokens made for it.

It is an OAuth resource server as the MCP authorization spec describes one:
- tokens are verified by FastMCP's own `JWTVerifier` against the broker's `/jwks.json`,
  with `iss` = the broker's issuer and `aud` = this server's resource URI (RFC 8707);
- it publishes RFC 9728 protected resource metadata naming the broker as its
  authorization server, which is how the MCP SDK client finds the broker.

Usage: python server.py --port P --issuer URL [--alg ES256]
The MCP endpoint is http://127.0.0.1:P/mcp, and that is also its resource URI.
"""

import argparse

from fastmcp import FastMCP
from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token


def build(port: int, issuer: str, alg: str) -> FastMCP:
    base_url = f"http://127.0.0.1:{port}"
    resource = f"{base_url}/mcp"
    verifier = JWTVerifier(
        jwks_uri=f"{issuer}/jwks.json",
        issuer=issuer,
        audience=resource,
        algorithm=alg,
        required_scopes=["read"],
    )
    auth = RemoteAuthProvider(
        token_verifier=verifier,
        authorization_servers=[issuer],
        base_url=base_url,
        scopes_supported=["read", "write"],
        resource_name="agent-sts end-to-end test server",
    )
    mcp = FastMCP("agent-sts-e2e", auth=auth)

    @mcp.tool
    def whoami() -> dict:
        """Who the verified token says the caller is."""
        token = get_access_token()
        if token is None:  # FastMCP only calls tools with a verified token here
            raise RuntimeError("no access token")
        claims = token.claims
        return {
            "sub": claims.get("sub"),
            "aud": claims.get("aud"),
            "iss": claims.get("iss"),
            "scope": claims.get("scope"),
            "jti": claims.get("jti"),
        }

    @mcp.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--alg", default="ES256")
    args = parser.parse_args()
    build(args.port, args.issuer, args.alg).run(
        transport="http", host="127.0.0.1", port=args.port, show_banner=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
