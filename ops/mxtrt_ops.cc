// mxtrt extension library: registers the `TensorRT` partitioner and the `_TensorRT`
// stateful subgraph op with MXNet's extension API.
//
// The C++ here is deliberately a shim. Every decision (which nodes, what to export, which
// runtime, caching) is made by the Python package, which installs its callbacks with
// mxtrt_set_callbacks() right after MXNet loads this library. Keeping policy in Python
// means one source of truth for op support and options, and no MXNet internals here.
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "lib_api.h"

using mxnet::ext::CustomStatefulOp;
using mxnet::ext::Graph;
using mxnet::ext::MXContext;
using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;
using mxnet::ext::MX_FAIL;
using mxnet::ext::MX_SUCCESS;

extern "C" {
// A reply sink: Python writes strings (errors) or key/value pairs (attributes) through the
// exported mxtrt_reply_* functions, so no memory ever crosses the boundary with two owners.
struct MxtrtReply {
  std::string error;
  std::unordered_map<std::string, std::string>* attrs = nullptr;
  bool accept = false;
};

// String key/value pairs (options, attributes); the arrays own nothing.
struct MxtrtStrings {
  int count;
  const char* const* keys;
  const char* const* vals;
};

// A list of tensors: shapes travel as one flat int64 array plus a rank per tensor. `data`,
// `versions` and `names` may be null where the callee has no use for them.
struct MxtrtTensors {
  int count;
  void* const* data;
  const int64_t* shapes;
  const int* ndims;
  const int* dtypes;
  const uint64_t* versions;
  const char* const* names;
};

typedef int (*supported_cb_t)(const char* graph_json, const MxtrtStrings* options, int num_nodes,
                              const int* json_to_id, int* ids, MxtrtReply* reply);
typedef int (*review_cb_t)(const char* subgraph_json, int subgraph_id,
                           const MxtrtStrings* options, const MxtrtTensors* params,
                           MxtrtReply* reply);
typedef int64_t (*create_cb_t)(const MxtrtStrings* attrs, int dev_type, int dev_id,
                               const MxtrtTensors* inputs, MxtrtReply* reply);
typedef int (*forward_cb_t)(int64_t handle, const MxtrtTensors* inputs,
                            const MxtrtTensors* outputs, int dev_type, int dev_id, void* stream,
                            MxtrtReply* reply);
typedef void (*destroy_cb_t)(int64_t handle);
}

namespace {

struct Callbacks {
  supported_cb_t supported = nullptr;
  review_cb_t review = nullptr;
  create_cb_t create = nullptr;
  forward_cb_t forward = nullptr;
  destroy_cb_t destroy = nullptr;
};

// Read under the mutex and copied out, so clearing at interpreter exit cannot race a call.
std::mutex g_mutex;
Callbacks g_callbacks;

Callbacks callbacks() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_callbacks;
}

const char kNotLoaded[] =
    "mxtrt: the Python side of the TensorRT backend is not loaded; run `import mxtrt_backend` "
    "before using the TensorRT backend";

// Owns the arrays an MxtrtStrings points into, for the duration of one call.
struct Strings {
  std::vector<const char*> keys, vals;
  explicit Strings(const std::unordered_map<std::string, std::string>& map) {
    for (const auto& kv : map) {
      keys.push_back(kv.first.c_str());
      vals.push_back(kv.second.c_str());
    }
  }
  MxtrtStrings view() const {
    return MxtrtStrings{static_cast<int>(keys.size()), keys.data(), vals.data()};
  }
};

// Owns the arrays an MxtrtTensors points into, for the duration of one call.
struct Tensors {
  std::vector<void*> data;
  std::vector<int64_t> shapes;
  std::vector<int> ndims, dtypes;
  std::vector<uint64_t> versions;
  std::vector<const char*> names;

  template <typename Dims>
  void add_shape(const Dims& dims) {
    ndims.push_back(static_cast<int>(dims.size()));
    for (auto d : dims) shapes.push_back(static_cast<int64_t>(d));
  }
  void add(const MXTensor& t) {
    data.push_back(t.data_ptr);
    dtypes.push_back(t.dtype);
    versions.push_back(t.verID);
    add_shape(t.shape);
  }
  MxtrtTensors view() const {
    return MxtrtTensors{static_cast<int>(ndims.size()),
                        data.empty() ? nullptr : data.data(),
                        shapes.data(),
                        ndims.data(),
                        dtypes.data(),
                        versions.empty() ? nullptr : versions.data(),
                        names.empty() ? nullptr : names.data()};
  }
};

int dev_type_code(const MXContext& ctx) { return ctx.dev_type == "gpu" ? 2 : 1; }

MXReturnValue fail(const std::string& message) {
  MX_ERROR_MSG << message;
  return MX_FAIL;
}

MXReturnValue supportedOps(const Graph* graph, std::vector<int>* ids,
                           const std::unordered_map<std::string, std::string>& options) {
  Callbacks cb = callbacks();
  if (!cb.supported) return fail(kNotLoaded);
  Strings opts(options);
  MxtrtStrings opts_view = opts.view();
  // Graph::toString() renumbers nodes in its own topological order, while `ids` follows
  // MXNet's node order; tell Python which id slot each JSON node owns.
  std::unordered_map<const mxnet::ext::Node*, int> id_of;
  for (size_t i = 0; i < graph->size(); i++) id_of[graph->getNode(i)] = static_cast<int>(i);
  std::vector<mxnet::ext::Node*> reverse_topo = graph->topological_sort();
  std::vector<int> json_to_id;
  for (auto it = reverse_topo.rbegin(); it != reverse_topo.rend(); ++it)
    json_to_id.push_back(id_of[*it]);
  MxtrtReply reply;
  std::string json = graph->toString();
  if (!cb.supported(json.c_str(), &opts_view, static_cast<int>(json_to_id.size()),
                    json_to_id.data(), ids->data(), &reply))
    return fail(reply.error);
  return MX_SUCCESS;
}

// MXNet 1.9 hands a supportedOps partitioner's whole table of supported node names to a new
// selector for every node it visits, which makes partitioning quadratic in graph size. A selector
// of our own asks Python once and answers MXNet's per-node questions from a vector.
class TensorRTSelector : public mxnet::ext::CustomOpSelector {
 public:
  explicit TensorRTSelector(std::vector<bool> supported) : supported_(std::move(supported)) {}
  bool Select(int node) override { return supported_[node]; }
  bool SelectInput(int, int input) override { return supported_[input]; }
  bool SelectOutput(int, int output) override { return supported_[output]; }

 private:
  std::vector<bool> supported_;
};

MXReturnValue createSelector(const Graph* graph, mxnet::ext::CustomOpSelector** selector,
                             const std::unordered_map<std::string, std::string>& options) {
  std::vector<int> ids(graph->size(), -2);
  if (!supportedOps(graph, &ids, options)) return MX_FAIL;
  std::vector<bool> supported;
  for (int id : ids) supported.push_back(id != -2);
  *selector = new TensorRTSelector(std::move(supported));
  return MX_SUCCESS;
}

MXReturnValue reviewSubgraph(const Graph* subgraph, int subgraph_id, bool* accept,
                             const std::unordered_map<std::string, std::string>& options,
                             std::unordered_map<std::string, std::string>* attrs) {
  Callbacks cb = callbacks();
  if (!cb.review) return fail(kNotLoaded);
  // Parameter values are known only when the user passed args/aux to optimize_for.
  Tensors params;
  for (const mxnet::ext::Node* node : subgraph->inputs) {
    if (node->tensor == nullptr || node->tensor->ctx.dev_type != "cpu") continue;
    params.names.push_back(node->name.c_str());
    params.add(*node->tensor);
  }
  Strings opts(options);
  MxtrtStrings opts_view = opts.view();
  MxtrtTensors params_view = params.view();
  MxtrtReply reply;
  reply.attrs = attrs;
  std::string json = subgraph->toString();
  if (!cb.review(json.c_str(), subgraph_id, &opts_view, &params_view, &reply))
    return fail(reply.error);
  *accept = reply.accept;
  return MX_SUCCESS;
}

class TensorRTOp : public CustomStatefulOp {
 public:
  explicit TensorRTOp(int64_t handle) : handle_(handle) {}

  ~TensorRTOp() override {
    Callbacks cb = callbacks();
    if (cb.destroy) cb.destroy(handle_);
  }

  MXReturnValue Forward(std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                        const OpResource& res) override {
    Callbacks cb = callbacks();
    if (!cb.forward) return fail(kNotLoaded);
    Tensors ins, outs;
    for (const MXTensor& t : *inputs) ins.add(t);
    for (const MXTensor& t : *outputs) outs.add(t);
    const MXContext& ctx = inputs->empty() ? outputs->at(0).ctx : inputs->at(0).ctx;
    MxtrtTensors in_view = ins.view(), out_view = outs.view();
    MxtrtReply reply;
    if (!cb.forward(handle_, &in_view, &out_view, dev_type_code(ctx), ctx.dev_id,
                    res.get_cuda_stream(), &reply))
      return fail(reply.error);
    return MX_SUCCESS;
  }

 private:
  int64_t handle_;
};

MXReturnValue createOpState(const std::unordered_map<std::string, std::string>& attrs,
                            const MXContext& ctx,
                            const std::vector<std::vector<unsigned int> >& in_shapes,
                            const std::vector<int> in_types, CustomStatefulOp** op_inst) {
  Callbacks cb = callbacks();
  if (!cb.create) return fail(kNotLoaded);
  Strings kv(attrs);
  Tensors ins;
  for (size_t i = 0; i < in_shapes.size(); i++) {
    ins.add_shape(in_shapes[i]);
    ins.dtypes.push_back(in_types[i]);
  }
  MxtrtStrings attrs_view = kv.view();
  MxtrtTensors in_view = ins.view();
  MxtrtReply reply;
  int64_t handle = cb.create(&attrs_view, dev_type_code(ctx), ctx.dev_id, &in_view, &reply);
  if (handle < 0) return fail(reply.error);
  *op_inst = CustomStatefulOp::create<TensorRTOp>(handle);
  return MX_SUCCESS;
}

}  // namespace

REGISTER_OP(_TensorRT)
    .setIsSubgraphOp()
    .setCreateOpState(createOpState, "cpu")
    .setCreateOpState(createOpState, "gpu");

REGISTER_PARTITIONER(TensorRT)
    .addStrategy("strategy1", "_TensorRT")
    .setCreateSelector("strategy1", createSelector)
    .setReviewSubgraph("strategy1", reviewSubgraph);

extern "C" {

MXReturnValue initialize(int version) {
  // The extension API this file is written against arrived in MXNet 1.9.
  return version >= 10900 ? MX_SUCCESS : MX_FAIL;
}

void mxtrt_set_callbacks(supported_cb_t supported, review_cb_t review, create_cb_t create,
                         forward_cb_t forward, destroy_cb_t destroy) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_callbacks = Callbacks{supported, review, create, forward, destroy};
}

void mxtrt_clear_callbacks() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_callbacks = Callbacks{};
}

void mxtrt_reply_error(MxtrtReply* reply, const char* message) { reply->error = message; }

void mxtrt_reply_accept(MxtrtReply* reply, int accept) { reply->accept = accept != 0; }

void mxtrt_reply_attr(MxtrtReply* reply, const char* key, const char* value) {
  if (reply->attrs) (*reply->attrs)[key] = value;
}

// MXNet 1.9 hands an extension op a reordered copy of each input it keeps in an MKLDNN layout, at
// every call. Before a forward, Python passes the arrays `_TensorRT` nodes bake, with MXNet's C
// API MXNDArrayWaitToRead and MXNDArrayGetData (which reorders an MKLDNN array to the default
// layout in place): one loop here, nanoseconds per array when none needs it. The wait comes first
// because a queued MXNet op (a Gluon block's convolution) may still be changing the layout.
// Returns MXNet's status: 0, or -1 with MXNet's error message set.
typedef int (*ndarray_call_t)(void* handle);
typedef int (*ndarray_data_t)(void* handle, void** data);

int mxtrt_default_layouts(void* const* mxnet_calls, void* const* handles, int count) {
  ndarray_call_t wait_to_read = reinterpret_cast<ndarray_call_t>(mxnet_calls[0]);
  ndarray_data_t get_data = reinterpret_cast<ndarray_data_t>(mxnet_calls[1]);
  void* data = nullptr;
  for (int i = 0; i < count; i++) {
    if (wait_to_read(handles[i]) != 0 || get_data(handles[i], &data) != 0) return -1;
  }
  return 0;
}

}  // extern "C"
