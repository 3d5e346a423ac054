#include "layers/exec.h"

#include "runtime/error.h"

namespace ls {

namespace {

// Every kernel call records a use of each buffer its pointer arguments point into (a dry-run
// placeholder carries its buffer's index in its high bits, see placeholder()), then advances
// the schedule by one position. Lifetimes therefore follow the kernels' actual arguments, even
// when a layer fetched a pointer several operations earlier.
class ScheduleOps final : public Ops {
 public:
  explicit ScheduleOps(Planner& p) : p_(p) {}
  template <class... P>
  void touch(P... ptrs) {
    (record(static_cast<const void*>(ptrs)), ...);
    p_.tick();
  }
  bool is_cuda() const override { return false; }
  void zero(void* p, size_t) override { touch(p); }
  void zero_ranges(void* p, const uint64_t* r, int64_t, uint64_t, size_t) override { touch(p, r); }
  void copy(void* d, const void* s, size_t) override { touch(d, s); }
  void to_host(void*, const void* s, size_t) override { touch(s); }
  void from_host(void* d, const void*, size_t) override { touch(d); }
  void synchronize() override {}
  void cast(const void* s, DType, void* d, DType, size_t) override { touch(s, d); }
  void add_inplace(void* y, const void* x, DType, size_t) override { touch(y, x); }
  void gemm(const GemmArgs& g) override { touch(g.a, g.b, g.c, g.bias, g.aux, g.bias_grad); }
  void embedding_forward(const EmbeddingArgs& a, const void* t, void* o) override {
    touch(a.tokens, a.learned_positions, t, o);
  }
  void embedding_backward(const EmbeddingArgs& a, const void* d, void* dt, void* dp, bool) override {
    touch(a.tokens, a.learned_positions, d, dt, dp);
  }
  void layernorm_forward(const void* x, const void* g, const void* b, void* y, void* m, void* r,
                         int64_t, int64_t, float, DType) override {
    touch(x, g, b, y, m, r);
  }
  void layernorm_backward(const void* dy, const void* x, const void* g, const void* m,
                          const void* r, const void* dres, void* dx, void* dg, void* db, int64_t,
                          int64_t, DType) override {
    touch(dy, x, g, m, r, dres, dx, dg, db);
  }
  void layernorm_backward_with_output(const void* dy, const void* x, const void* g, const void* b,
                                      const void* m, const void* r, const void* dres, void* dx,
                                      void* y, void* dg, void* db, int64_t, int64_t,
                                      DType) override {
    touch(dy, x, g, b, m, r, dres, dx, y, dg, db);
  }
  void layernorm_backward_from_output(const void* dy, const void* y, const void* g, const void* b,
                                      const void* r, const void* dres, void* dx, void* dg, void* db,
                                      int64_t, int64_t, DType) override {
    touch(dy, y, g, b, r, dres, dx, dg, db);
  }
  void bias_dropout_residual_forward(const void* x, const void* b, const void* r, void* o, int64_t,
                                     int64_t, float, DropoutKey, DType) override {
    touch(x, b, r, o);
  }
  void bias_dropout_residual_layernorm_forward(const void* x, const void* b, const void* r, void* o,
                                               const void* g, const void* be, void* y, void* m,
                                               void* rs, int64_t, int64_t, float, DropoutKey, float,
                                               DType) override {
    touch(x, b, r, o, g, be, y, m, rs);
  }
  void dropout_bias_backward(const void* d, void* dx, void* db, int64_t, int64_t, float,
                             DropoutKey, DType) override {
    touch(d, dx, db);
  }
  void act_dropout_forward(const void* pre, void* o, int64_t, int64_t, Activation, float,
                           DropoutKey, DType) override {
    touch(pre, o);
  }
  void act_dropout_backward(const void* d, const void* pre, void* dp, void* db, int64_t, int64_t,
                            Activation, float, DropoutKey, DType) override {
    touch(d, pre, dp, db);
  }
  void relu_dropout_backward_from_output(const void* d, const void* o, void* dp, void* db, int64_t,
                                         int64_t, float, DType) override {
    touch(d, o, dp, db);
  }
  void dropout_forward(const void* x, void* o, size_t, float, DropoutKey, DType) override {
    touch(x, o);
  }
  void bias_grad(const void* dy, void* db, int64_t, int64_t, DType) override { touch(dy, db); }
  void split_heads(const void* in, const void* b, void* o, int64_t, int64_t, int64_t, int64_t,
                   int64_t, DType) override {
    touch(in, b, o);
  }
  void merge_heads(const void* in, void* o, int64_t, int64_t, int64_t, int64_t, int64_t,
                   DType) override {
    touch(in, o);
  }
  void softmax_forward(const void* s, void* p, const uint8_t* m, bool, int64_t, int64_t, int64_t,
                       int64_t, DType) override {
    touch(s, p, m);
  }
  void softmax_backward(const void* d, const void* p, void* ds, int64_t, int64_t, float,
                        DropoutKey, DType) override {
    touch(d, p, ds);
  }
  void attention_forward(const AttentionArgs& a) override {
    touch(a.q, a.k, a.v, a.ctx, a.lse, a.key_pad);
  }
  void attention_backward(const AttentionArgs& a, const void* d_ctx, void* dq, void* dk, void* dv,
                          void* delta, void* d_bias) override {
    touch(a.q, a.k, a.v, a.ctx, a.lse, a.key_pad, d_ctx, dq, dk, dv, delta, d_bias);
  }
  void cross_entropy_forward(const void* l, const int32_t* t, void* lse, void* sums, int64_t,
                             int64_t, int32_t, float, DType) override {
    touch(l, t, lse, sums);
  }
  void cross_entropy_backward(const void* l, const int32_t* t, const void* lse, const void* gs,
                              void* dl, int64_t, int64_t, int32_t, float, DType) override {
    touch(l, t, lse, gs, dl);
  }
  void sum_squares(const void* x, size_t, void* o, DType) override { touch(x, o); }
  void update_control(const void* ss, void* tok, const UpdateControlArgs&, TrainState* st,
                      void* gs, DType) override {
    touch(ss, tok, st, gs);
  }
  void adam_update(void* p, const void* g, void* m, void* v, void* w, DType, size_t,
                   const AdamArgs&, const AdamStep* st, DType) override {
    touch(p, g, m, v, w, st);
  }
  void import_tokens(const int32_t* s, int32_t* d, int64_t, int32_t, int32_t,
                     uint32_t* bad) override {
    touch(s, d, bad);
  }
  void padding_mask(const int32_t* t, uint8_t* m, int64_t, int32_t) override { touch(t, m); }
  void counter_add(uint64_t* c, uint64_t) override { touch(c); }
  void scalar_accumulate(void* s, const void* x, DType) override { touch(s, x); }
  void* host_alloc(size_t) override {
    LS_FAIL(LS_ERR_INTERNAL, "host_alloc called during a dry run");
  }
  void host_free(void*) override {}

 private:
  void record(const void* p) {
    int32_t index = placeholder_index(p);
    if (index >= 0) p_.use(BufferId{index});
  }
  Planner& p_;
};

}  // namespace

void* placeholder(BufferId id) {
  return reinterpret_cast<void*>((static_cast<uintptr_t>(id.index) + 1) << kPlaceholderShift);
}

int32_t placeholder_index(const void* p) {
  uintptr_t u = reinterpret_cast<uintptr_t>(p);
  if (u < (uintptr_t{1} << kPlaceholderShift)) return -1;  // null, or a weight placeholder
  return static_cast<int32_t>((u >> kPlaceholderShift) - 1);
}

std::unique_ptr<Ops> make_schedule_ops(Planner& planner) {
  return std::make_unique<ScheduleOps>(planner);
}

Exec::Exec(Planner& planner)
    : planner_(&planner), schedule_ops_(make_schedule_ops(planner)), ops_(schedule_ops_.get()) {}

Exec::Exec(Ops& ops, const Plan& plan, std::byte* base) : ops_(&ops), plan_(&plan), base_(base) {}

Exec::~Exec() = default;

void* Exec::ptr(BufferId id) {
  LS_REQUIRE(id.valid(), LS_ERR_INTERNAL, "Exec::ptr: invalid buffer id");
  if (planner_) {
    planner_->use(id);
    return placeholder(id);
  }
  return base_ + plan_->arena_offset(id);
}

}  // namespace ls
