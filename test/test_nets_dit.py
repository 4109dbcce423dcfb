"""PPD image DiT, rectified-flow schedule and Euler sampling against the official goldens."""
from __future__ import annotations

import pytest
import torch
from conftest import load_golden, load_manifest

from ppd_ros.nets import flow
from ppd_ros.nets.checkpoints import CheckpointError
from ppd_ros.nets.dit import PPD_DIT_FULL, PixelDiT, load_ppd_dit
from ppd_ros.nets.layers import grid_positions, rope_2d, timestep_features

TINY = dict(hidden_size=64, depth=4, num_heads=4, patch_size=8)
ATOL = 1e-4


@pytest.fixture(scope="module")
def dit_golden():
    return load_golden("dit_tiny")


@pytest.fixture(scope="module")
def tiny_state(dit_golden):
    tensors, _ = dit_golden
    return {k: v for k, v in tensors.items() if k.startswith("dit.")}


@pytest.fixture(scope="module")
def tiny_dit(tiny_state):
    return load_ppd_dit(tiny_state, config=TINY)


@pytest.fixture(scope="module")
def functions_golden():
    return load_golden("functions")


def _call_inputs(tensors, call):
    size = "x".join(str(s) for s in call["x_shape"][:1] + call["x_shape"][2:])
    return tensors[f"input.x_{size}"], tensors[f"input.sem_{size}"]


# --- image DiT -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["case_a", "case_b", "case_c", "case_d"])
def test_dit_tiny_matches_golden(dit_golden, tiny_dit, case):
    tensors, sidecar = dit_golden
    call = next(c for c in sidecar["calls"] if c["name"] == case)
    x, sem = _call_inputs(tensors, call)
    timestep = tensors[f"{case}.timestep"]
    assert timestep.tolist() == call["timestep"]
    with torch.no_grad():
        out = tiny_dit(x, sem, timestep)
    expected = tensors[call["out"]]
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def test_dit_scalar_timestep_broadcasts_like_per_sample_timesteps(dit_golden, tiny_dit):
    tensors, _ = dit_golden
    x, sem = tensors["input.x_2x64x96"], tensors["input.sem_2x64x96"]
    with torch.no_grad():
        shared = tiny_dit(x, sem, torch.tensor(250, dtype=torch.int32))
        per_sample = tiny_dit(x, sem, torch.tensor([250, 250], dtype=torch.int32))
    torch.testing.assert_close(shared, per_sample, atol=1e-5, rtol=0)


def test_dit_rejects_bad_shapes(dit_golden, tiny_dit):
    tensors, _ = dit_golden
    x, sem = tensors["input.x_2x64x96"], tensors["input.sem_2x64x96"]
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny_dit(x[..., :56], sem, 500)
    with pytest.raises(ValueError, match="semantics"):
        tiny_dit(x, sem[:, :-1], 500)


def test_full_size_dit_on_meta_matches_manifest():
    manifest = load_manifest("ppd_dit")
    assert len(manifest) == 352
    with torch.device("meta"):
        model = PixelDiT(**PPD_DIT_FULL)
    state = {f"dit.{k}": v for k, v in model.state_dict().items()}
    assert sorted(state) == sorted(manifest)
    for key, (shape, dtype) in manifest.items():
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype) == f"torch.{dtype}", key
    assert all(p.is_meta for p in model.parameters())


# --- checkpoint loading --------------------------------------------------------------------

def test_load_ppd_dit_accepts_sem_encoder_part_and_file(tmp_path, tiny_state, dit_golden):
    tensors, _ = dit_golden
    state = dict(tiny_state)
    state["sem_encoder.pretrained.cls_token"] = torch.zeros(1, 1, 8)
    state["sem_encoder.encoder.image_mean"] = torch.zeros(3)
    path = tmp_path / "ppd.pth"
    torch.save(state, path)
    model = load_ppd_dit(path, config=TINY)
    assert not model.training
    x, sem = tensors["input.x_1x48x112"], tensors["input.sem_1x48x112"]
    with torch.no_grad():
        out = model(x, sem, tensors["case_c.timestep"])
    torch.testing.assert_close(out, tensors["case_c.out"], atol=ATOL, rtol=0)


def test_load_ppd_dit_names_renamed_key(tiny_state):
    state = dict(tiny_state)
    state["dit.blocks.1.attn.q_norm.scale"] = state.pop("dit.blocks.1.attn.q_norm.weight")
    with pytest.raises(CheckpointError) as err:
        load_ppd_dit(state, config=TINY)
    assert "blocks.1.attn.q_norm.weight" in str(err.value)  # missing
    assert "blocks.1.attn.q_norm.scale" in str(err.value)  # unexpected


def test_load_ppd_dit_names_wrong_shape(tiny_state):
    state = dict(tiny_state)
    state["dit.proj_fusion.0.weight"] = state["dit.proj_fusion.0.weight"][:, :-1]
    with pytest.raises(CheckpointError, match=r"proj_fusion\.0\.weight"):
        load_ppd_dit(state, config=TINY)


def test_load_ppd_dit_rejects_keys_outside_dit_prefix(tiny_state):
    state = {k.replace("dit.", "module.dit.", 1) if "final_layer" in k else k: v
             for k, v in tiny_state.items()}
    with pytest.raises(CheckpointError, match=r"module\.dit\.final_layer\.linear\.weight"):
        load_ppd_dit(state, config=TINY)


def test_load_ppd_dit_rejects_missing_key(tiny_state):
    state = {k: v for k, v in tiny_state.items() if k != "dit.t_embedder.mlp.2.bias"}
    with pytest.raises(CheckpointError, match=r"t_embedder\.mlp\.2\.bias"):
        load_ppd_dit(state, config=TINY)


# --- timestep features and RoPE --------------------------------------------------------------

def test_timestep_features_match_golden(functions_golden):
    tensors, _ = functions_golden
    out = timestep_features(tensors["timestep_embedding.t"], 256)
    assert out.dtype == torch.float32
    # float32 arguments t * freq reach 1000, where one ulp is 6e-5 and CPUs' vector exp kernels
    # differ by an ulp of freq (1000 x 1.2e-7): sin/cos may move by that much (Intel AVX512: 2.9e-5)
    torch.testing.assert_close(out, tensors["timestep_embedding.out"], atol=2e-4, rtol=0)


def test_rope_2d_matches_golden(functions_golden):
    tensors, _ = functions_golden
    positions = tensors["rope.positions"]
    # the golden positions are the row-major (y, x) grid of 3 rows x 4 columns
    assert torch.equal(positions[0], grid_positions(3, 4))
    out = rope_2d(tensors["rope.tokens"], positions, frequency=100.0)
    torch.testing.assert_close(out, tensors["rope.out"], atol=1e-6, rtol=0)


# --- schedule, Euler steps, timesteps --------------------------------------------------------

def test_sampler_steps_match_golden(functions_golden):
    tensors, sidecar = functions_golden
    pred, x_t = tensors["sampler.pred"], tensors["sampler.x_t"]
    for step in sidecar["groups"]["sampler"]["steps"]:
        t = torch.tensor(step["t"], dtype=torch.int32)
        s = torch.tensor(step["next_t"], dtype=torch.int32)
        torch.testing.assert_close(flow.euler_step(pred, x_t, t, s), tensors[step["tensor"]],
                                   atol=1e-6, rtol=0)
    torch.testing.assert_close(flow.euler_step(pred, x_t, torch.tensor(600), torch.tensor(350)),
                               tensors["sampler.step_to_t600_s350"], atol=1e-6, rtol=0)
    batch = flow.euler_step(pred, x_t, torch.tensor([1000, 400]), torch.tensor([700, -1]))
    torch.testing.assert_close(batch, tensors["sampler.step_to_batch"], atol=1e-6, rtol=0)


def test_schedule_matches_golden(functions_golden):
    tensors, _ = functions_golden
    t = tensors["schedule.t"]
    torch.testing.assert_close(flow.add_noise(tensors["schedule.x0"], tensors["schedule.xT"], t),
                               tensors["schedule.forward"], atol=1e-6, rtol=0)
    x0, x_noise = flow.convert_from_velocity(tensors["sampler.pred"], tensors["sampler.x_t"], t)
    torch.testing.assert_close(x0, tensors["schedule.convert_from_pred.x0"], atol=1e-6, rtol=0)
    torch.testing.assert_close(x_noise, tensors["schedule.convert_from_pred.xT"], atol=1e-6, rtol=0)


def test_sampling_timesteps_match_table(golden_dir):
    import json

    table = json.loads((golden_dir / "timesteps.json").read_text())["table"]
    assert len(table) >= 23
    for steps, entry in table.items():
        got = flow.sampling_timesteps(int(steps))
        assert got.dtype == torch.int32
        assert got.tolist() == entry["values"], steps


def test_training_helpers_are_consistent():
    gen = torch.Generator().manual_seed(7)
    t = flow.draw_training_timesteps(4096, generator=gen)
    assert t.dtype == torch.int64 and t.shape == (4096,)
    assert 0 <= int(t.min()) and int(t.max()) <= 1000
    assert abs(t.float().median().item() - 500) < 25  # logit-normal(0, 1) is centred at T/2
    x0 = torch.randn(3, 1, 4, 6, generator=gen)
    noise = torch.randn(3, 1, 4, 6, generator=gen)
    t1, t2 = torch.tensor([100, 500, 900]), torch.tensor([300, 500, 1000])
    velocity = flow.velocity_target(x0, noise)
    # x_t is linear in t/T with slope equal to the velocity target
    diff = flow.add_noise(x0, noise, t2) - flow.add_noise(x0, noise, t1)
    torch.testing.assert_close(diff, ((t2 - t1) / 1000).view(3, 1, 1, 1) * velocity, atol=1e-5, rtol=0)
    # the exact velocity recovers both ends of the path
    x_t = flow.add_noise(x0, noise, t1)
    est_x0, est_noise = flow.convert_from_velocity(velocity, x_t, t1)
    torch.testing.assert_close(est_x0, x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(est_noise, noise, atol=1e-5, rtol=0)


# --- full sampling loop ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def sampling_golden():
    return load_golden("ppd_sampling_tiny")


@pytest.mark.parametrize("steps", [4, 1, 10])
def test_sample_depth_matches_golden(sampling_golden, tiny_dit, steps):
    tensors, sidecar = sampling_golden
    run = next(r for r in sidecar["runs"] if r["steps"] == steps)
    assert flow.sampling_timesteps(steps).tolist() == run["timesteps"]
    calls = []

    def recording_dit(x, semantics, timestep):
        calls.append((x[:, :1].clone(), timestep.clone()))
        return tiny_dit(x, semantics, timestep)

    depth = flow.sample_depth(recording_dit, tensors["image"], tensors["semantics"], steps=steps,
                              noise=tensors[f"steps{steps}.init_latent"])
    torch.testing.assert_close(depth, tensors[run["outputs"]], atol=ATOL, rtol=0)
    assert [int(t) for _, t in calls] == run["timesteps"]
    assert all(t.ndim == 0 for _, t in calls)
    if steps == 4:
        for i, (latent_in, _) in enumerate(calls):
            torch.testing.assert_close(latent_in, tensors[f"steps4.step{i}.latent_in"], atol=ATOL, rtol=0)


def test_sample_depth_generator_noise_is_reproducible(sampling_golden, tiny_dit):
    tensors, _ = sampling_golden
    image, sem = tensors["image"], tensors["semantics"]
    first = flow.sample_depth(tiny_dit, image, sem, steps=2, noise=torch.Generator().manual_seed(3))
    second = flow.sample_depth(tiny_dit, image, sem, steps=2, noise=torch.Generator().manual_seed(3))
    other = flow.sample_depth(tiny_dit, image, sem, steps=2, noise=torch.Generator().manual_seed(4))
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)


def test_sample_depth_with_bfloat16_dit_stays_close(sampling_golden, tiny_state):
    tensors, _ = sampling_golden
    model = load_ppd_dit(tiny_state, config=TINY, dtype=torch.bfloat16)
    depth = flow.sample_depth(model, tensors["image"], tensors["semantics"], steps=4,
                              noise=tensors["steps4.init_latent"])
    assert depth.dtype == torch.float32
    # bf16 rounding moves the tiny output by ~2e-2 (README: ~1e-2 under autocast)
    torch.testing.assert_close(depth, tensors["steps4.depth"], atol=0.1, rtol=0)
