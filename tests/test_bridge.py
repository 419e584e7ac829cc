"""The JS bridge's failure paths, in headless Chromium: limits named in words, a lost device."""

from __future__ import annotations

import pytest

from rwkvweb import ops
from rwkvweb.plan import Plan

pytestmark = pytest.mark.browser

BRIDGE_JS = """
async ([plan, loseDevice]) => {
  const { requestDevice } = await import("/gpu/device.js");
  const { Bridge } = await import("/gpu/bridge.js");
  const gpu = await requestDevice();
  const bridge = new Bridge(gpu.device, new URL("/shaders/", location.href), gpu.adapter);
  const errors = [];
  try { await bridge.load(plan); } catch (error) { errors.push(error.message); return errors; }
  bridge.run("test");
  if (loseDevice) {
    gpu.device.destroy();
    await new Promise((resolve) => setTimeout(resolve, 100));
    for (const attempt of [() => bridge.run("test"), () => bridge.read(0, 0, 4)]) {
      try { await attempt(); errors.push("no error"); } catch (error) { errors.push(error.message); }
    }
  }
  return errors;
}
"""


def small_plan() -> Plan:
    plan = Plan()
    a, b, t, out = (plan.buffer(n, 256, "scratch") for n in ("a", "b", "t", "out"))
    ops.norm(plan, "test", a, b, t, out, 64, 1, 1e-5)
    return plan


def test_a_buffer_over_the_device_limit_is_named(gpu_page):
    plan = small_plan().to_json()
    plan["buffers"][0]["bytes"] = 1 << 40
    (message,) = gpu_page.evaluate(BRIDGE_JS, [plan, False])
    assert 'buffer "a" needs 1099511627776 bytes but this GPU\'s maxBufferSize is' in message


def test_a_binding_over_the_device_limit_is_named(gpu_page):
    plan = small_plan().to_json()
    plan["programs"]["test"][0]["bindings"][1][2] = 1 << 40
    (message,) = gpu_page.evaluate(BRIDGE_JS, [plan, False])
    assert "maxStorageBufferBindingSize" in message and "smaller max_binding" in message


def test_a_lost_device_is_reported_on_every_later_call(gpu_page):
    messages = gpu_page.evaluate(BRIDGE_JS, [small_plan().to_json(), True])
    assert len(messages) == 2
    assert all("the GPU device was lost" in m and "Reload model" in m for m in messages), messages
