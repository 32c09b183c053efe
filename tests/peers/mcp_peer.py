"""An independent MCP server for Parley's bridge tests, written with the official Python SDK (`pip install "mcp>=2,<3"`).

It deliberately serves the awkward things real servers do: a tool name no LLM accepts (`orders.lookup/v2`), a
schema that cannot be offered (`type: array`), an `isError` result, a result with only `structuredContent`, a slow
tool that records cancellation, a tool that changes the tool list at runtime (`notifications/tools/list_changed`),
and a paginated `tools/list` (three tools per page).

Usage: `python3 mcp_peer.py stdio` or `python3 mcp_peer.py http` (prints `peer listening on HOST:PORT` first, serves
`/mcp`). Every call is appended as one JSON line to the file named by `PEER_JOURNAL` (when set):
`{"event": "start" | "done" | "cancelled", "tool": ..., "arguments": ..., "meta": ..., "t": seconds}`.
Logs go to stderr only: stdout is the MCP channel in stdio mode.
"""

import json
import os
import socket
import sys
import time

import anyio
import mcp_types as types
from mcp.server.lowlevel import NotificationOptions, Server

PAGE_SIZE = 3
EXTRA_ENABLED = {"on": False}


def journal(event, tool, arguments=None, meta=None):
    path = os.environ.get("PEER_JOURNAL")
    if not path:
        return
    line = json.dumps({"event": event, "tool": tool, "arguments": arguments, "meta": meta, "t": time.time()})
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def obj(properties=None, required=None):
    schema = {"type": "object", "properties": properties or {}}
    if required:
        schema["required"] = required
    return schema


def all_tools():
    tools = [
        types.Tool(name="echo_meta", description="Echo the request _meta back as JSON.", input_schema=obj()),
        types.Tool(
            name="orders.lookup/v2",
            description="Look up an order (a name with characters LLM providers reject).",
            input_schema={
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"order_id": {"$ref": "#/definitions/orderId"}},
                "required": ["order_id"],
                "definitions": {"orderId": {"type": "string", "description": "The order number."}},
            },
        ),
        types.Tool(
            name="bad_schema",
            description="A tool whose input schema is not valid JSON Schema; an LLM provider would reject it.",
            input_schema={"type": "object", "properties": {"q": {"type": "strnig"}}},
        ),
        types.Tool(name="fail", description="Always fails with isError.", input_schema=obj()),
        types.Tool(
            name="slow",
            description="Sleeps for the given number of seconds, then answers.",
            input_schema=obj({"seconds": {"type": "number", "minimum": 0}}, ["seconds"]),
        ),
        types.Tool(
            name="structured_only",
            description="Answers with structuredContent and no text.",
            input_schema=obj(),
        ),
        types.Tool(
            name="enable_extra",
            description="Adds the tool extra_tool and announces the change.",
            input_schema=obj(),
            annotations=types.ToolAnnotations(destructive_hint=True, read_only_hint=False),
        ),
    ]
    if EXTRA_ENABLED["on"]:
        tools.append(types.Tool(name="extra_tool", description="Appears after enable_extra.", input_schema=obj()))
    return tools


async def list_tools(ctx, params):
    tools = all_tools()
    start = int(params.cursor) if params is not None and params.cursor else 0
    page = tools[start : start + PAGE_SIZE]
    next_cursor = str(start + PAGE_SIZE) if start + PAGE_SIZE < len(tools) else None
    return types.ListToolsResult(tools=page, next_cursor=next_cursor)


def text(value):
    return [types.TextContent(type="text", text=value)]


async def call_tool(ctx, params):
    name = params.name
    arguments = params.arguments or {}
    meta = dict(ctx.meta) if ctx.meta else {}
    journal("start", name, arguments, meta)
    print(f"peer: call {name} meta={json.dumps(meta)}", file=sys.stderr, flush=True)
    if name == "echo_meta":
        result = types.CallToolResult(content=text(json.dumps(meta, sort_keys=True)))
    elif name == "orders.lookup/v2":
        result = types.CallToolResult(content=text(f"python peer: order {arguments.get('order_id')} is shipped"))
    elif name == "fail":
        result = types.CallToolResult(content=text("the peer refused"), is_error=True)
    elif name == "slow":
        try:
            await anyio.sleep(float(arguments.get("seconds", 0)))
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                journal("cancelled", name, arguments, meta)
            raise
        result = types.CallToolResult(content=text("slow done"))
    elif name == "structured_only":
        result = types.CallToolResult(content=[], structured_content={"answer": 42})
    elif name == "enable_extra":
        EXTRA_ENABLED["on"] = True
        await ctx.session.send_tool_list_changed()
        result = types.CallToolResult(content=text("extra_tool enabled"))
    elif name == "extra_tool":
        result = types.CallToolResult(content=text("extra done"))
    else:
        result = types.CallToolResult(content=text(f"unknown tool {name}"), is_error=True)
    journal("done", name, arguments, meta)
    return result


def make_server():
    return Server("parley-test-peer", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio():
    from mcp.server.stdio import stdio_server

    server = make_server()
    async with stdio_server() as (read_stream, write_stream):
        options = server.create_initialization_options(NotificationOptions(tools_changed=True))
        await server.run(read_stream, write_stream, options)


def serve_http():
    import uvicorn

    server = make_server()
    app = server.streamable_http_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    host, port = sock.getsockname()
    print(f"peer listening on {host}:{port}", flush=True)
    config = uvicorn.Config(app, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if mode == "http":
        serve_http()
    else:
        anyio.run(serve_stdio)


if __name__ == "__main__":
    main()
