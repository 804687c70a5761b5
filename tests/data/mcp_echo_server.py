"""A stdio MCP server with one tool, `echo`, for the tests: JSON-RPC 2.0, one JSON object per
line (the MCP stdio transport). Standard library only: it runs in a sandbox's python3."""

import json
import sys


def answer(request):
    method = request.get("method")
    if method == "initialize":
        version = request.get("params", {}).get("protocolVersion", "2025-06-18")
        return {
            "protocolVersion": version,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "agentvisor-test-echo", "version": "1.0"},
        }
    if method == "tools/list":
        schema = {"type": "object", "properties": {"text": {"type": "string"}}}
        return {
            "tools": [
                {
                    "name": "echo",
                    "description": "Echo the text back.",
                    "inputSchema": {**schema, "required": ["text"]},
                }
            ]
        }
    if method == "tools/call":
        text = request.get("params", {}).get("arguments", {}).get("text", "")
        return {"content": [{"type": "text", "text": f"mcp-echo: {text}"}], "isError": False}
    if method == "ping":
        return {}
    return None


for line in sys.stdin:
    try:
        request = json.loads(line)
    except ValueError:
        continue
    if "id" not in request:  # a notification (notifications/initialized, ...)
        continue
    result = answer(request)
    if result is None:
        reply = {
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": {"code": -32601, "message": f"no method {request.get('method')}"},
        }
    else:
        reply = {"jsonrpc": "2.0", "id": request["id"], "result": result}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
