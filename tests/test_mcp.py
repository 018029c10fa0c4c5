"""The app's /predict as an MCP tool (gradio[mcp]), called through the MCP streamable-HTTP endpoint with an image
file; names of server files, file:// URLs and any URL (the server's own included) are refused."""

from __future__ import annotations

import asyncio
import base64
import os
import socket

import httpx
import pytest

from cifake_models import fair, list_detectors
from cifake_models.page.state import load_state

mcp = pytest.importorskip("mcp", reason="gradio's mcp extra is not installed")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(app_module, tiny_assets):
    demo = app_module.build_demo(load_state(tiny_assets["checkpoints"], tiny_assets["reports"]))
    # As app.main serves it: behind cifake_models.fair's limits.
    _, local_url, _ = fair.launch(
        demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True, mcp_server=True
    )
    yield local_url
    demo.close()


def call_tools(url: str, calls: list[tuple[str, dict]]) -> tuple[list[str], list]:
    """The server's tool names, and the result of each (tool, arguments) call, through one MCP session."""
    from mcp.client.streamable_http import streamable_http_client

    async def session_calls():
        async with streamable_http_client(url + "gradio_api/mcp/") as (read, write, _):
            async with mcp.ClientSession(read, write) as session:
                await session.initialize()
                tools = [tool.name for tool in (await session.list_tools()).tools]
                return tools, [await session.call_tool(name, arguments) for name, arguments in calls]

    return asyncio.run(session_calls())


def test_predict_is_an_mcp_tool_that_takes_an_image_file(url, tiny_data):
    image = next((tiny_data / "kaggle" / "test" / "FAKE").iterdir())
    data = "data:image/jpeg;base64," + base64.b64encode(image.read_bytes()).decode()
    hostile = ["/etc/passwd", "file:///etc/passwd"]
    tools, results = call_tools(url, [("predict", {"image": data}), *(("predict", {"image": h}) for h in hostile)])
    assert set(tools) == {"predict", "predict_batch"}  # the page's own events are not tools
    answer, *refused = results
    assert not answer.isError
    text = answer.content[0].text
    assert all(f"'{name}': {{'REAL': " in text for name in list_detectors()), text
    assert all(result.isError for result in refused)
    assert all("root:" not in content.text for result in refused for content in result.content)
    # A URL, even the server's own, is refused before Gradio would fetch it (cifake_models.fair).
    call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call"}
    call["params"] = {"name": "predict", "arguments": {"image": f"{url}gradio_api/file=/etc/passwd"}}
    answer = httpx.post(url + "gradio_api/mcp/", json=call, timeout=30)
    assert answer.status_code == 400 and "URLs are not fetched" in answer.text
