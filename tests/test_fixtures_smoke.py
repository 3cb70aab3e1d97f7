def test_tiny_models_generate(tiny_gemma3_dir, tiny_gemma3n_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for d in (tiny_gemma3_dir, tiny_gemma3n_dir):
        tok = AutoTokenizer.from_pretrained(d)
        model = AutoModelForCausalLM.from_pretrained(d)
        ids = tok.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
        assert out.shape[1] == ids["input_ids"].shape[1] + 3
        assert ids["input_ids"][0, 0].item() == tok.bos_token_id
        assert (ids["input_ids"][0] == tok.bos_token_id).sum() == 1
