"""+dp4a on WebGPU (headless Chromium, SwiftShader, whose WGSL has packed_4x8_integer_dot_product): a whole
generated model under the forced variant, token by token and in prefill chunks, against numpy on the same plan,
each compared with the float int8 plan (gpu_harness.check_dp4a_logits states the bound and why). The kernels
alone: test_kernels.py's dp4a cases (bit-exact codes, f32-order sums)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_async
from gpu_harness import check_dp4a_logits, device_features, dp4a_plan, plan_generated_model, run_prefill_in_browser
from rwkvweb.api import Model
from rwkvweb.config import ModelConfig
from rwkvweb.ops import DP4A_FEATURE

pytestmark = pytest.mark.browser


async def _numpy_logits(path: str, chunk: int, matvec: str, tokens: list[int]) -> np.ndarray:
    model = await Model.load(path, precision="int8", chunk=chunk, matvec=matvec, max_binding=64 * 1024,
                             tokenizer_for=lambda config, metadata: None)  # fmt: skip
    assert model.info()["matvec"] == matvec
    return np.stack([np.frombuffer(row, np.float32) for row in await model.logits(tokens)])


@pytest.mark.parametrize("width, chunk, matvec", [(256, 16, "rows-wg+subgroups+dp4a"), (128, 7, "rows-wg+dp4a")])
def test_dp4a_model_on_the_page(gpu_page, server, model_dir, width, chunk, matvec):
    if (
        DP4A_FEATURE not in device_features(gpu_page)
        or "subgroups" in matvec
        and "subgroups" not in device_features(gpu_page)
    ):
        pytest.fail(f"Chromium's SwiftShader here offers {DP4A_FEATURE} and subgroups; this one does not")
    name = f"dp4a-{width}-{chunk}.st"
    cfg = ModelConfig.default_for(2, width, 300, head_size=64)
    planned = plan_generated_model(model_dir / name, cfg, width, "int8", matvec, chunk)
    kernels = planned.compiled.plan.kernels
    assert any(k["entry"] == "dp4a" for k in kernels) and any(k["shader"] == "quantize_x.wgsl" for k in kernels)
    tokens = [int(t) for t in np.random.default_rng(chunk).integers(0, 300, 40)]
    got = run_prefill_in_browser(gpu_page, planned.compiled, server.url + "test-models/" + name, tokens)
    same_plan = run_async(_numpy_logits(str(model_dir / name), chunk, matvec, tokens))
    plain = run_async(_numpy_logits(str(model_dir / name), chunk, "rows-wg", tokens))
    check_dp4a_logits(got["decode"], same_plan, plain)
    check_dp4a_logits(got["prefill"], same_plan, plain)


DESCRIBE_AND_REFUSE_JS = """
async (plan) => {
  const { requestDevice, describe } = await import("/gpu/device.js");
  const { Bridge } = await import("/gpu/bridge.js");
  const gpu = await requestDevice();
  const described = describe(gpu.adapter, gpu.device);
  Object.defineProperty(navigator.gpu, "wgslLanguageFeatures", { value: new Set(), configurable: true });
  const bridge = new Bridge(gpu.device, new URL("/shaders/", location.href), gpu.adapter);
  try {
    await bridge.load(plan);
    return { described, refused: null };
  } catch (error) {
    return { described, refused: String(error.message || error) };
  } finally {
    bridge.destroy();
    delete navigator.gpu.wgslLanguageFeatures;  // the prototype's getter again
  }
}
"""


def test_the_page_reports_the_feature_and_refuses_a_dp4a_plan_without_it(gpu_page, tmp_path):
    """describe() carries the browser's WGSL language features (model.choose_matvec reads them; SwiftShader still
    gets cols); a +dp4a plan on a browser without packed_4x8_integer_dot_product fails in words, not in a shader."""
    from rwkvweb.model import choose_matvec

    out = gpu_page.evaluate(DESCRIBE_AND_REFUSE_JS, dp4a_plan(tmp_path))
    assert DP4A_FEATURE in out["described"]["wgslLanguageFeatures"]
    assert choose_matvec(out["described"]) == "cols"  # SwiftShader's default, +dp4a or not
    assert out["refused"] and f"lacks, {DP4A_FEATURE}: plan without the matvec options" in out["refused"]
