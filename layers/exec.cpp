#include "layers/exec.h"

#include "runtime/error.h"

namespace ls {

namespace {

// Every kernel call advances the schedule by one position.
class ScheduleOps final : public Ops {
 public:
  explicit ScheduleOps(Planner& p) : p_(p) {}
  bool is_cuda() const override { return false; }
  void zero(void*, size_t) override { p_.tick(); }
  void copy(void*, const void*, size_t) override { p_.tick(); }
  void to_host(void*, const void*, size_t) override { p_.tick(); }
  void from_host(void*, const void*, size_t) override { p_.tick(); }
  void synchronize() override {}
  void cast(const void*, DType, void*, DType, size_t) override { p_.tick(); }
  void add_inplace(void*, const void*, DType, size_t) override { p_.tick(); }
  void gemm(const GemmArgs&) override { p_.tick(); }
  void embedding_forward(const EmbeddingArgs&, const void*, void*) override { p_.tick(); }
  void embedding_backward(const EmbeddingArgs&, const void*, void*, void*, bool) override {
    p_.tick();
  }
  void layernorm_forward(const void*, const void*, const void*, void*, void*, void*, int64_t,
                         int64_t, float, DType) override {
    p_.tick();
  }
  void layernorm_backward(const void*, const void*, const void*, const void*, const void*,
                          const void*, void*, void*, void*, int64_t, int64_t, DType) override {
    p_.tick();
  }
  void bias_dropout_residual_forward(const void*, const void*, const void*, void*, int64_t,
                                     int64_t, float, DropoutKey, DType) override {
    p_.tick();
  }
  void dropout_bias_backward(const void*, void*, void*, int64_t, int64_t, float, DropoutKey,
                             DType) override {
    p_.tick();
  }
  void act_dropout_forward(const void*, void*, int64_t, int64_t, Activation, float, DropoutKey,
                           DType) override {
    p_.tick();
  }
  void act_dropout_backward(const void*, const void*, void*, void*, int64_t, int64_t, Activation,
                            float, DropoutKey, DType) override {
    p_.tick();
  }
  void dropout_forward(const void*, void*, size_t, float, DropoutKey, DType) override { p_.tick(); }
  void bias_grad(const void*, void*, int64_t, int64_t, DType) override { p_.tick(); }
  void split_heads(const void*, const void*, void*, int64_t, int64_t, int64_t, int64_t, int64_t,
                   DType) override {
    p_.tick();
  }
  void merge_heads(const void*, void*, int64_t, int64_t, int64_t, int64_t, int64_t,
                   DType) override {
    p_.tick();
  }
  void softmax_forward(const void*, void*, const uint8_t*, bool, int64_t, int64_t, int64_t,
                       int64_t, DType) override {
    p_.tick();
  }
  void softmax_backward(const void*, const void*, void*, int64_t, int64_t, float, DropoutKey,
                        DType) override {
    p_.tick();
  }
  void cross_entropy_forward(const void*, const int32_t*, void*, void*, int64_t, int64_t, int32_t,
                             float, DType) override {
    p_.tick();
  }
  void cross_entropy_backward(const void*, const int32_t*, const void*, const void*, void*,
                              int64_t, int64_t, int32_t, float, DType) override {
    p_.tick();
  }
  void sum_squares(const void*, size_t, void*, DType) override { p_.tick(); }
  void adam_update(void*, const void*, void*, void*, void*, DType, size_t, const AdamArgs&,
                   const void*, const int32_t*, DType) override {
    p_.tick();
  }

 private:
  Planner& p_;
};

}  // namespace

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
    // A placeholder that is never dereferenced: ScheduleOps ignores its arguments.
    return reinterpret_cast<void*>(static_cast<uintptr_t>(0x1000 + 256 * id.index));
  }
  return base_ + plan_->arena_offset(id);
}

}  // namespace ls
