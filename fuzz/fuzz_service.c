/* fuzz_service.c - libFuzzer target: protobuf decoding and validation of
 * every method of the MultiTenantLipSync service.
 *
 * Input: one byte choosing the method (mod 6, in proto order), then the
 * request message bytes, handed to the method's handler from
 * ls_service_methods() exactly as the transport would. The service and its
 * models are described in fuzz_svc.h; the invariants checked on every call
 * are in fz_call, plus per-method ones here. */
#include "fuzz_svc.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int m = data[0] % M_COUNT;
    ls_buf resp = {0};
    ls_code code = fz_call(m, data + 1, size - 1, fz_hash(data, size), &resp);
    if (m == M_LIST && code == LS_OK) {
        Multitenant__ListModelsResponse *r = multitenant__list_models_response__unpack(NULL, resp.len, resp.data);
        fz_check(r && r->n_models == fz_cfg.n_models, "ListModels lists every configured model", code, "");
        for (size_t i = 0; i < r->n_models; i++)
            fz_check(ls_config_find(&fz_cfg, r->models[i]->model_id) != NULL, "ListModels names configured ids",
                     code, r->models[i]->model_id);
        multitenant__list_models_response__free_unpacked(r, NULL);
    }
    if (m == M_HEALTH && code == LS_OK) {
        Multitenant__HealthResponse *r = multitenant__health_response__unpack(NULL, resp.len, resp.data);
        fz_check(r && r->healthy && r->configured_models == (int)fz_cfg.n_models, "Health counts the models", code,
                 "");
        fz_check(r->loaded_models >= 0 && r->loaded_models <= fz_cfg.max_models, "loaded models within capacity",
                 code, "");
        multitenant__health_response__free_unpacked(r, NULL);
    }
    if (m == M_INFER && code == LS_OK) {
        /* Only a request carrying every float of a full batch can succeed. */
        Multitenant__CompositeBatchRequest *q = multitenant__composite_batch_request__unpack(NULL, size - 1, data + 1);
        fz_check(q && q->n_visual_frames >= 6u * 320 * 320, "success only with full-size tensors", code, "");
        multitenant__composite_batch_request__free_unpacked(q, NULL);
    }
    ls_buf_free(&resp);
    return 0;
}
