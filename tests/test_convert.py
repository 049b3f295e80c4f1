"""convert PREFIX EPOCH --out DIR, then load(DIR) or load_checkpoint in a new process: no rebuild.
And what a conversion leaves behind when it fails, is interrupted, or replaces an earlier one."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon.model_zoo import vision

from mxtrt_backend import cli, convert, demo, partition
from mxtrt_backend.convert import BuiltFor, rebuild_notice
from mxtrt_backend.engine.ort import cpu_key

from helpers import random_params

RUN = textwrap.dedent("""
    import logging, sys
    import mxnet as mx, numpy as np
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    import mxtrt_backend
    if sys.argv[1] == "load":
        sym, args, aux = mxtrt_backend.load(sys.argv[2])
    else:
        sym, args, aux = mx.model.load_checkpoint(sys.argv[2] + "/model", 0)
    x = np.load(sys.argv[3])
    ex = sym.bind(mx.cpu(), dict(args, data=mx.nd.array(x), softmax_label=mx.nd.zeros(len(x))),
                  aux_states=aux, grad_req="null")
    ex.forward(is_train=False)
    np.save(sys.argv[4], ex.outputs[0].asnumpy())
""")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lenet")
    return demo.train_lenet_digits(str(folder), epochs=1)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mxtrt_backend", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def convert_in_a_process(checkpoint, out, cache, batch: int) -> subprocess.CompletedProcess:
    """`mxtrt convert` of the LeNet checkpoint; the label's shape is left to MXNet to infer."""
    prefix, epoch = checkpoint
    return run_cli("convert", prefix, str(epoch), "--out", str(out), "--shape", f"{batch},1,8,8",
                   "--ctx", "cpu", env=dict(os.environ, MXTRT_CACHE_DIR=str(cache)))


def test_convert_then_run_in_new_processes_without_rebuilding(checkpoint, tmp_path):
    prefix, epoch = checkpoint
    out = tmp_path / "converted"
    done = convert_in_a_process(checkpoint, out, tmp_path / "user-cache", 16)
    assert done.returncode == 0, done.stderr
    assert "building engines [#] 1/1" in done.stderr
    assert (f"1 engine(s) for onnxruntime {ort_version()} on {cpu_key()} in {out / 'engines'}"
            in done.stdout)
    assert sorted(p.name for p in out.iterdir()) == [
        "engines", "model-0000.params", "model-symbol.json", "mxtrt.json"]
    assert [p.suffix for p in (out / "engines").iterdir()] == [".engine"]

    x = demo.digits()[2][:16]
    np.save(tmp_path / "x.npy", x)
    expected = _plain_forward(prefix, epoch, x)
    for mode, cache in [("load", "empty-cache"), ("checkpoint", "user-cache")]:
        run_env = dict(os.environ, MXTRT_CACHE_DIR=str(tmp_path / cache))
        result = subprocess.run([sys.executable, "-c", RUN, mode, str(out), str(tmp_path / "x.npy"),
                                 str(tmp_path / f"{mode}.npy")], env=run_env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "cache hit (disk)" in result.stdout and "cache miss" not in result.stdout, result.stdout
        assert "will rebuild" not in result.stdout
        np.testing.assert_allclose(np.load(tmp_path / f"{mode}.npy"), expected, rtol=1e-5, atol=1e-6)


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _plain_forward(prefix: str, epoch: int, x: np.ndarray) -> np.ndarray:
    sym, args, aux = mx.model.load_checkpoint(prefix, epoch)
    ex = sym.bind(mx.cpu(), dict(args, data=mx.nd.array(x), softmax_label=mx.nd.zeros(len(x))),
                  aux_states=aux, grad_req="null")
    ex.forward(is_train=False)
    return ex.outputs[0].asnumpy()


def test_manifest_says_what_the_engines_are_for(checkpoint, tmp_path):
    prefix, epoch = checkpoint
    result = convert.convert(prefix, epoch, str(tmp_path / "out"), {"data": (4, 1, 8, 8)},
                             {"ort_threads": "1"})
    manifest = json.loads((tmp_path / "out" / "mxtrt.json").read_text())
    assert manifest == {
        "format": 1, "ctx": "cpu",
        "built_for": {"runtime": "onnxruntime", "version": ort_version(), "device": cpu_key()},
        "inputs": {"data": [4, 1, 8, 8], "softmax_label": [4]}, "options": {"ort_threads": "1"},
        "engines": sorted(p.name for p in (tmp_path / "out" / "engines").iterdir())}
    assert result.built_for == BuiltFor("onnxruntime", ort_version(), cpu_key())


def mxtrt(capsys, *argv: str) -> tuple[int, list[str]]:
    """Run the command line in this process: its exit code and its error lines."""
    code = cli.main(list(argv))
    return code, [line for line in capsys.readouterr().err.splitlines() if "error" in line]


def _garbage(prefix, tmp_path):
    (tmp_path / "bad-symbol.json").write_text("{not json")
    (tmp_path / "bad-0001.params").write_bytes(b"\0" * 64)
    return str(tmp_path / "bad"), "1"


def _truncated(prefix, tmp_path):
    (tmp_path / "cut-symbol.json").write_text(open(f"{prefix}-symbol.json").read())
    (tmp_path / "cut-0001.params").write_bytes(open(f"{prefix}-0001.params", "rb").read()[:500])
    return str(tmp_path / "cut"), "1"


@pytest.mark.parametrize("case, words", [
    (lambda prefix, tmp: (str(tmp / "nothing"), "1"), r"no checkpoint '.*nothing': .*nothing-"
                                                      r"symbol.json does not exist"),
    (lambda prefix, tmp: (prefix, "7"), r"checkpoint .*lenet. has no epoch 7 \(.*-0007.params does not exist\); "
                                        r"epochs saved: 1$"),
    (_garbage, r"checkpoint '.*bad' epoch 1 cannot be read, is it damaged\? MXNet: "),
    (_truncated, r"checkpoint '.*cut' epoch 1 cannot be read, is it damaged\? MXNet: .*Invalid "
                 r"NDArray file format"),
])
def test_a_bad_checkpoint_is_one_line_and_writes_nothing(checkpoint, tmp_path, capsys, case,
                                                         words):
    prefix, epoch = case(checkpoint[0], tmp_path)
    out = tmp_path / "deeper" / "out"
    code, errors = mxtrt(capsys, "convert", prefix, epoch, "--out", str(out), "--shape",
                         "1,1,8,8", "--ctx", "cpu")
    assert code == 2 and len(errors) == 1, errors
    assert re.match(r"mxtrt convert: error: " + words, errors[0]), errors[0]
    assert not (tmp_path / "deeper").exists()


@pytest.mark.parametrize("shapes, words", [
    (["dat:1,1,8,8"], "--shape dat:...: the model has no input 'dat'; its inputs are data, "
                      "softmax_label"),
    (["1,2,8,8"], "--shape does not fit the model: Error in operator conv0: Shape inconsistent"),
    (["softmax_label:4"], "give --shape for data: MXNet cannot infer its shape from the others"),
])
def test_a_shape_the_model_does_not_have_is_one_line(checkpoint, tmp_path, capsys, shapes, words):
    prefix, epoch = checkpoint
    argv = [arg for shape in shapes for arg in ("--shape", shape)]
    code, errors = mxtrt(capsys, "convert", prefix, str(epoch), "--out", str(tmp_path / "o"),
                         "--ctx", "cpu", *argv)
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"mxtrt convert: error: {words}"), errors[0]
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_out_is_one_line(checkpoint, tmp_path, capsys):
    prefix, epoch = checkpoint
    (tmp_path / "file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    cases = {str(tmp_path / "file"): "is a file; give a folder",
             str(tmp_path / "file" / "sub"): "cannot write there",
             str(tmp_path / "mine"): "holds files that are not a converted model"}
    for out, words in cases.items():
        code, errors = mxtrt(capsys, "convert", prefix, str(epoch), "--out", out, "--shape",
                             "1,1,8,8", "--ctx", "cpu")
        assert code == 2 and len(errors) == 1 and words in errors[0], errors
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine"]


def test_convert_rejects_a_bad_option_before_any_work(checkpoint, tmp_path):
    prefix, epoch = checkpoint
    done = run_cli("convert", prefix, str(epoch), "--out", str(tmp_path / "o"), "--shape",
                   "1,1,8,8", "-o", "min_subgraph_sise=2", env=dict(os.environ))
    assert done.returncode == 2
    assert "did you mean 'min_subgraph_size'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("options", [
    {"precision": "int8"},
    {"precision": "fp16_int8", "calibration_iters": "3"},  # no forwards to calibrate from
])
def test_int8_for_a_gpu_needs_a_calibration_cache_before_any_work(checkpoint, tmp_path, options):
    prefix, epoch = checkpoint
    with pytest.raises(cli.CliError, match=r"precision=int8 needs -o calibration_cache=FILE"):
        convert.convert(prefix, epoch, str(tmp_path / "o"), {"data": (1, 1, 8, 8)},
                        options, cli.Device("gpu", 0))
    assert list(tmp_path.iterdir()) == []


def test_converting_again_replaces_the_earlier_conversion(checkpoint, tmp_path, capsys):
    """ort_threads is part of the engine key: the second conversion's engine has another name,
    and the first one's must not stay behind."""
    prefix, epoch = checkpoint
    out = tmp_path / "out"
    names = []
    for threads in ("1", "2"):
        code, _ = mxtrt(capsys, "convert", prefix, str(epoch), "--out", str(out), "--shape",
                        "2,1,8,8", "--ctx", "cpu", "-o", f"ort_threads={threads}")
        assert code == 0
        names.append(sorted(p.name for p in (out / "engines").iterdir()))
        assert json.loads((out / "mxtrt.json").read_text())["options"] == {"ort_threads": threads}
    assert len(names[1]) == 1 and names[0] != names[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine-cache", "out"]


def test_cache_dir_option_receives_the_engines_and_stays_out_of_the_symbol(checkpoint, tmp_path,
                                                                           capsys):
    prefix, epoch = checkpoint
    out, cache = tmp_path / "out", tmp_path / "elsewhere"
    code, _ = mxtrt(capsys, "convert", prefix, str(epoch), "--out", str(out), "--shape", "2,1,8,8",
                    "--ctx", "cpu", "-o", f"cache_dir={cache}", "-o", "min_subgraph_size=1")
    assert code == 0
    engines = sorted(p.name for p in (out / "engines").iterdir())
    assert sorted(p.name for p in cache.iterdir() if p.suffix == ".engine") == engines
    nodes = json.loads((out / "model-symbol.json").read_text())["nodes"]
    options = [json.loads(n["attrs"][partition.ATTR_OPTIONS]) for n in nodes
               if n["op"] == "_TensorRT"]
    assert options == [{"min_subgraph_size": "1"}]
    assert str(cache) not in (out / "model-symbol.json").read_text()


def test_progress_counts_the_engines_the_cache_reports(tmp_path, capsys):
    """Two subgraphs (erf stays in MXNet between them): two engines, counted as they are made."""
    def conv_relu(x, name):
        x = mx.sym.Convolution(x, num_filter=3, kernel=(3, 3), pad=(1, 1), name=f"{name}_conv")
        return mx.sym.Activation(x, act_type="relu", name=f"{name}_relu")

    sym = conv_relu(mx.sym.erf(conv_relu(mx.sym.var("data"), "a"), name="cut"), "b")
    args, aux = random_params(sym, {"data": (1, 3, 8, 8)})
    mx.model.save_checkpoint(str(tmp_path / "two"), 0, sym, args, aux)
    result = convert.convert(str(tmp_path / "two"), 0, str(tmp_path / "out"), {"data": (1, 3, 8, 8)})
    err = capsys.readouterr().err
    assert "\rbuilding engines [#.] 1/2" in err and "\rbuilding engines [##] 2/2\n" in err
    assert result.subgraphs == result.engines == 2


def test_load_says_when_the_engines_will_be_rebuilt(checkpoint, tmp_path, caplog):
    prefix, epoch = checkpoint
    out = tmp_path / "out"
    convert.convert(prefix, epoch, str(out), {"data": (2, 1, 8, 8)})
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        convert.load(str(out))
    assert not caplog.records  # made here: nothing to say
    manifest = json.loads((out / "mxtrt.json").read_text())
    manifest["built_for"]["version"] = "1.0.0"
    (out / "mxtrt.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        convert.load(str(out))
    assert caplog.messages == [
        f"mxtrt: the engines in {out} are for onnxruntime 1.0.0 on {cpu_key()}; cpu has "
        f"onnxruntime {ort_version()} on {cpu_key()}: the first forward on cpu will rebuild them "
        "(then they are cached)"]


@pytest.mark.parametrize("manifest", ["{not json", '{"ctx": "cpu"}', '{"ctx": "cpu", "built_for": 3}'])
def test_a_damaged_manifest_is_a_warning_and_the_model_still_loads(checkpoint, tmp_path, caplog,
                                                                  manifest):
    prefix, epoch = checkpoint
    out = tmp_path / "out"
    convert.convert(prefix, epoch, str(out), {"data": (2, 1, 8, 8)})
    (out / "mxtrt.json").write_text(manifest)
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        sym, args, _ = convert.load(str(out))
    assert len(caplog.messages) == 1 and "mxtrt.json is unreadable" in caplog.messages[0]
    assert "_TensorRT" in sym.tojson() and args


A100 = BuiltFor("tensorrt", "10.13.0", "NVIDIA A100-SXM4-40GB sm_80")
T4 = BuiltFor("tensorrt", "10.13.0", "Tesla T4 sm_75")


def test_rebuild_notice_for_gpus_of_another_model_or_tensorrt_version_or_none():
    assert rebuild_notice("m", "gpu", A100, {"gpu:0": A100, "gpu:1": A100}, None) is None
    mixed = rebuild_notice("m", "gpu", A100, {"gpu:0": A100, "gpu:1": T4}, None)
    assert mixed == ("mxtrt: the engines in m are for tensorrt 10.13.0 on NVIDIA A100-SXM4-40GB "
                     "sm_80; gpu:1 has tensorrt 10.13.0 on Tesla T4 sm_75: the first forward on "
                     "gpu:1 will rebuild them (then they are cached)")
    newer = BuiltFor("tensorrt", "10.14.1", A100.device)
    assert "gpu:0 has tensorrt 10.14.1 on NVIDIA A100" in rebuild_notice("m", "gpu", A100,
                                                                         {"gpu:0": newer}, None)
    assert rebuild_notice("m", "gpu", A100, {}, "CUDA sees no GPU") == (
        "mxtrt: the engines in m are for tensorrt 10.13.0 on NVIDIA A100-SXM4-40GB sm_80; this "
        "machine cannot run gpu contexts (CUDA sees no GPU)")


@pytest.mark.skipif(cli.gpu_problem(cli.Device("gpu", 0)) is None, reason="a GPU is usable here")
def test_loading_a_gpu_conversion_on_this_machine_says_why_it_cannot_serve(checkpoint, tmp_path,
                                                                          caplog):
    prefix, epoch = checkpoint
    out = tmp_path / "out"
    convert.convert(prefix, epoch, str(out), {"data": (2, 1, 8, 8)})
    manifest = json.loads((out / "mxtrt.json").read_text())
    manifest.update(ctx="gpu:0", built_for=A100.__dict__)
    (out / "mxtrt.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="mxtrt"):
        sym, _, _ = convert.load(str(out))
    assert len(caplog.messages) == 1
    assert caplog.messages[0].startswith(f"mxtrt: the engines in {out} are for tensorrt 10.13.0 "
                                         "on NVIDIA A100-SXM4-40GB sm_80; this machine cannot run "
                                         "gpu contexts (")
    assert "_TensorRT" in sym.tojson()


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """A checkpoint whose engine takes a second or more to build: time to interrupt it."""
    folder = tmp_path_factory.mktemp("resnet")
    net = vision.resnet18_v1(pretrained=False)
    net.initialize()
    net.hybridize()
    net(mx.nd.zeros((1, 3, 64, 64)))
    net.export(str(folder / "r18"), 0)
    return str(folder / "r18")


def test_interrupted_convert_leaves_the_earlier_conversion_and_nothing_else(
        checkpoint, resnet, tmp_path):
    out = tmp_path / "out"
    first = convert_in_a_process(checkpoint, out, tmp_path / "cache", 2)
    assert first.returncode == 0, first.stderr
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    interrupted = subprocess.Popen(
        [sys.executable, "-m", "mxtrt_backend", "convert", resnet, "0", "--out", str(out),
         "--shape", "1,3,64,64", "--ctx", "cpu"], stdout=subprocess.PIPE,
        env=dict(os.environ, MXTRT_CACHE_DIR=str(tmp_path / "cache")),
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    # The engine's lock file: the build of the staged conversion has started.
    while not list(tmp_path.glob(".out.converting-*/engines/*.lock")):
        assert interrupted.poll() is None and time.monotonic() < deadline, interrupted.communicate()
        time.sleep(0.01)
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=240)
    assert interrupted.returncode == 130, err
    assert "mxtrt convert: interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out"]
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_the_cache_size_limit_never_drops_engines_of_a_converted_model(checkpoint, tmp_path,
                                                                      monkeypatch):
    prefix, epoch = checkpoint
    monkeypatch.setenv("MXTRT_CACHE_MAX_SIZE", "1")  # smaller than any engine
    result = convert.convert(prefix, epoch, str(tmp_path / "out"), {"data": (16, 1, 8, 8),
                                                            "softmax_label": (16,)})
    assert result.subgraphs >= 1
    assert len(list((tmp_path / "out" / "engines").glob("*.engine"))) == result.subgraphs
