"""Pack files, strictly checked: unknown keys, runner configs, plain files, plain YAML."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import InvalidPack, InvalidParameters
from policies import pack_files, pack_schema, packs, parameters
from tasks import runners

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "packs"


def _pack(
    root: Path, actions: dict[str, str] | None = None, rules: dict[str, str] | None = None
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pack.yaml").write_text("name: p\n")
    for folder, files in (("actions", actions or {}), ("rules", rules or {})):
        (root / folder).mkdir(exist_ok=True)
        for name, text in files.items():
            (root / folder / name).write_text(text)
    return root


def _refused(root: Path) -> str:
    with pytest.raises(InvalidPack) as caught:
        packs.read_pack(root)
    return caught.value.message


def _action(tmp_path: Path, text: str) -> str:
    return _refused(_pack(tmp_path / "p", {"a.yaml": text}))


def test_every_example_pack_loads() -> None:
    specs = [packs.read_pack(directory) for directory in pack_files.discover(EXAMPLES)]
    assert specs and all(spec.actions for spec in specs)


def test_the_runner_names_have_one_home() -> None:
    assert runners.NAMES is pack_schema.NAMES
    assert set(pack_schema.RUNNER_CONFIG) == set(pack_schema.NAMES)


def test_an_unknown_top_level_key_names_its_line_and_the_close_key(tmp_path: Path) -> None:
    message = _action(tmp_path, "name: a\nrunner: noop\ndescriptoin: x\n")
    assert message.endswith("a.yaml:3: descriptoin: unknown key (did you mean description?)")


def test_a_runner_config_key_at_the_top_level_is_pointed_under_runner_config(
    tmp_path: Path,
) -> None:
    # Given the runner's keys written at the top level, runner_config left out
    text = "name: a\nrunner: http\nurl: https://x.example\nmethd: GET\n"
    # Then the first is named, not the runner_config it made look missing
    assert _action(tmp_path, text).endswith(
        "a.yaml:3: url: unknown key here; it belongs under runner_config"
    )
    text = "name: a\nrunner: http\nrunner_config: {url: 'https://x.example'}\nmethd: GET\n"
    assert "a.yaml:4: methd: unknown key (did you mean method?)" in _action(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: a\nrunner: noop\npolicy:\n  concurency: 2\n",
            "a.yaml:4: policy.concurency: unknown key (did you mean concurrency?)",
        ),
        (
            "name: a\nrunner: noop\npolicy:\n  retry:\n    max_retry: 2\n",
            "a.yaml:5: policy.retry.max_retry: unknown key (did you mean max_retries?)",
        ),
        (
            "name: a\nrunner: noop\npolicy:\n  rate_limit: {count: 1, per_s: 1, burst: 2}\n",
            "a.yaml:4: policy.rate_limit.burst: unknown key",
        ),
        (
            "name: a\nrunner: http\nrunner_config:\n  url: https://x.example\n  methd: GET\n",
            "a.yaml:5: runner_config.methd: unknown key (did you mean method?)",
        ),
        (
            "name: a\nrunner: noop\nrunner_config: {seconds: 1}\n",
            "a.yaml:3: runner_config.seconds: unknown key (known here: none)",
        ),
    ],
)
def test_an_unknown_key_anywhere_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in _action(tmp_path, text)


def test_an_unknown_key_in_pack_yaml_or_a_rule_is_refused(tmp_path: Path) -> None:
    root = _pack(tmp_path / "p")
    (root / "pack.yaml").write_text("name: p\npolicy: {}\ndescription: d\nowner: me\n")
    assert "pack.yaml:4: owner: unknown key" in _refused(root)
    rule = "name: r\ntrigger: t\naction: p.a\nparams: {}\n"
    root = _pack(tmp_path / "q", rules={"r.yaml": rule})
    assert "r.yaml:4: params: unknown key (did you mean parameters?)" in _refused(root)


def test_a_runner_configs_required_keys_are_checked_at_load(tmp_path: Path) -> None:
    text = "name: a\nrunner: http\nrunner_config:\n  method: GET\n"
    assert "a.yaml:3: runner_config: 'url' is a required property" in _action(tmp_path, text)
    assert "'runner_config' is a required property" in _action(tmp_path, "name: a\nrunner: http\n")
    text = "name: a\nrunner: slack\nrunner_config: {webhook_url: 'https://h.example'}\n"
    assert "'text' is a required property" in _action(tmp_path, text)


def test_templates_stand_for_any_type_in_runner_config(tmp_path: Path) -> None:
    action = (
        "name: a\nrunner: email\nrunner_config:\n"
        "  host: smtp.example\n  from: a@example.org\n  to: '{{ parameters.to }}'\n"
        "  port: '{{ parameters.port }}'\n  timeout_s: '{{ parameters.t }}'\n"
        "  verify_tls: '{{ parameters.verify }}'\n  password: '{{ secrets.SMTP_PASSWORD }}'\n"
    )
    spec = packs.read_pack(_pack(tmp_path / "p", {"a.yaml": action}))
    assert spec.actions[0]["runner_config"]["port"] == "{{ parameters.port }}"
    # A value that is neither the type nor a template is refused, with the type it needs
    text = action.replace("'{{ parameters.t }}'", "soon")
    assert "runner_config.timeout_s: 'soon' is not of type 'number' (or a {{ template }})" in (
        _action(tmp_path / "q", text)
    )


def test_a_template_in_a_string_shell_command_is_refused(tmp_path: Path) -> None:
    text = "name: a\nrunner: shell\nrunner_config:\n  command: 'ping -c 1 {{ parameters.host }}'\n"
    message = _action(tmp_path, text)
    assert "a.yaml:4: runner_config.command: a template in a string command" in message
    assert "[/usr/bin/ping, -c," in message and "parameters_as: env" in message


def test_the_argv_form_and_a_plain_string_command_are_accepted(tmp_path: Path) -> None:
    argv = (
        "name: a\nrunner: shell\nrunner_config:\n  command: [ping, -c, 1, '{{ parameters.h }}']\n"
    )
    plain = "name: b\nrunner: shell\nrunner_config: {command: 'echo \"$USHER_PARAM_H\"'}\n"
    positional = (
        "name: c\nrunner: shell\nrunner_config:\n"
        "  command: [sh, -c, 'ping \"$1\"', sh, '{{ parameters.h }}']\n"
    )
    spec = packs.read_pack(
        _pack(tmp_path / "p", {"a.yaml": argv, "b.yaml": plain, "c.yaml": positional})
    )
    assert [a["name"] for a in spec.actions] == ["a", "b", "c"]


@pytest.mark.parametrize(
    "command",
    [
        "[sh, -c, 'ping {{ parameters.h }}']",
        "[/bin/bash, -ec, 'ping {{ parameters.h }}']",
        "[/usr/bin/zsh, -o, pipefail, -c, 'x {% if 1 %}y{% endif %}']",
    ],
)
def test_a_template_in_a_shells_c_script_is_refused(tmp_path: Path, command: str) -> None:
    text = f"name: a\nrunner: shell\nrunner_config:\n  command: {command}\n"
    assert "runner_config.command[" in _action(tmp_path, text)


def test_rule_parameters_cannot_reference_secrets(tmp_path: Path) -> None:
    rule = "name: r\ntrigger: t\naction: p.a\nparameters:\n  token: 'Bearer {{ secrets.API }}'\n"
    message = _refused(_pack(tmp_path / "p", rules={"r.yaml": rule}))
    assert "r.yaml:5: parameters.token: rule parameters cannot use secrets" in message
    assert "runner_config" in message
    rule = "name: r\ntrigger: t\naction: p.a\nparameters:\n  t: \"{{ secrets['API'] }}\"\n"
    assert "cannot use secrets" in _refused(_pack(tmp_path / "q", rules={"r.yaml": rule}))
    # The word outside a template, or a payload field of that name, is no secret
    rule = (
        "name: r\ntrigger: t\naction: p.a\nparameters: {t: 'secrets {{ event.payload.secrets }}'}\n"
    )
    assert packs.read_pack(_pack(tmp_path / "s", rules={"r.yaml": rule})).rules


def test_the_actions_parameters_must_be_a_json_schema(tmp_path: Path) -> None:
    text = "name: a\nrunner: noop\nparameters:\n  type: 3\n"
    assert "a.yaml:4: parameters.type: not a JSON Schema" in _action(tmp_path, text)


def test_a_symlinked_file_is_refused_without_showing_its_target(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:SECRET-CONTENT:0:0\n")
    root = _pack(tmp_path / "p")
    (root / "actions" / "x.yaml").symlink_to(secret)
    message = _refused(root)
    assert "x.yaml: a symbolic link" in message
    assert "SECRET-CONTENT" not in message and "secret.txt" not in message


@pytest.mark.parametrize("link", ["pack.yaml", "actions", "rules"])
def test_a_symlinked_pack_yaml_or_folder_is_refused(tmp_path: Path, link: str) -> None:
    real = _pack(tmp_path / "real", {"a.yaml": "name: a\nrunner: noop\n"}, {"r.yaml": "x: 1\n"})
    root = tmp_path / "p"
    root.mkdir()
    for name in ("pack.yaml", "actions", "rules"):
        if name == link:
            (root / name).symlink_to(real / name)
        elif name == "pack.yaml":
            shutil.copy(real / name, root / name)
        else:
            shutil.copytree(real / name, root / name)
    assert f"{link}: a symbolic link" in _refused(root)


def test_a_fifo_is_not_read(tmp_path: Path) -> None:
    root = _pack(tmp_path / "p")
    os.mkfifo(root / "actions" / "x.yaml")
    assert "x.yaml: not a regular file" in _refused(root)


def test_a_file_over_one_mebibyte_is_refused(tmp_path: Path) -> None:
    text = "name: a\nrunner: noop\ndescription: '" + "x" * pack_files.MAX_FILE_BYTES + "'\n"
    assert "a.yaml: larger than 1 MiB" in _action(tmp_path, text)


def test_a_file_of_exactly_one_mebibyte_is_read(tmp_path: Path) -> None:
    head = "name: a\nrunner: noop\ndescription: '"
    text = head + "x" * (pack_files.MAX_FILE_BYTES - len(head) - 2) + "'\n"
    assert len(text) == pack_files.MAX_FILE_BYTES
    assert packs.read_pack(_pack(tmp_path / "p", {"a.yaml": text})).actions


def test_a_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    # The 422-byte bomb: nine levels of nine aliases each, 9**9 strings once expanded
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    text = "name: a\nrunner: noop\nrunner_config:\n" + "".join(f"  {line}\n" for line in lines)
    assert "a.yaml:4: YAML aliases are not allowed" in _action(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "a.yaml:2: not valid YAML"),
        ("name: !!python/name:os.system a\n", "a.yaml:1: YAML tags"),
        ("- name: a\n", "a.yaml:1: document: must be a mapping of keys to values, not a list"),
        ("", "a.yaml: document: must be a mapping of keys to values, not empty"),
        ("name: a\n---\nname: b\n", "a.yaml:2: not valid YAML"),
        ("name: a\nrunner: noop\n7: x\n", "a.yaml:3: 7: a key must be a string"),
        ("name: a\nrunner: noop\ndescription: .inf\n", "description: inf is not a finite"),
        ('name: a\nrunner: noop\ndescription: "\\0"\n', "description: holds a NUL"),
        ("x: " + "[" * 65 + "]" * 65 + "\n", "document: nested deeper than 64 levels"),
        ("x: " + "[" * 5000 + "\n", "a.yaml: nested deeper than 64 levels"),
        ("x: " + "9" * 5000 + "\n", "a.yaml: not valid YAML"),
    ],
)
def test_anything_but_plain_yaml_data_is_a_clean_error(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in _action(tmp_path, text)


def test_bytes_that_are_not_utf8_are_a_clean_error(tmp_path: Path) -> None:
    root = _pack(tmp_path / "p")
    (root / "actions" / "a.yaml").write_bytes(b"name: \xff\n")
    assert "a.yaml: not UTF-8 text" in _refused(root)


def test_a_date_stays_a_string(tmp_path: Path) -> None:
    action = "name: a\nrunner: noop\ndescription: 2024-01-31\n"
    spec = packs.read_pack(_pack(tmp_path / "p", {"a.yaml": action}))
    assert spec.actions[0]["description"] == "2024-01-31"


def test_a_symlinked_pack_directory_is_not_discovered(tmp_path: Path) -> None:
    real = _pack(tmp_path / "elsewhere" / "real")
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "linked").symlink_to(real, target_is_directory=True)
    with pytest.raises(InvalidPack, match="linked: a symbolic link"):
        pack_files.discover(tmp_path / "packs")


def test_the_sleep_runner_reads_seconds_as_a_number() -> None:
    validate = parameters.validator({}, "sleep")
    assert validate({"seconds": 0.5}) == {"seconds": 0.5}
    with pytest.raises(
        InvalidParameters, match=r"parameters\.seconds: 'soon' is not of type 'number'"
    ):
        validate({"seconds": "soon"})
    with pytest.raises(
        InvalidParameters, match=r"parameters\.seconds: -1 is less than the minimum"
    ):
        validate({"seconds": -1})


def test_parameters_are_capped_in_bytes_and_depth() -> None:
    validate = parameters.validator({}, max_bytes=256)
    validate({"k": "x" * 200})
    with pytest.raises(
        InvalidParameters, match=r"parameters are 3\d\d bytes; at most 256 are allowed"
    ):
        validate({"k": "x" * 300})
    deep: Any = 1
    for _ in range(parameters.MAX_DEPTH):
        deep = [deep]
    with pytest.raises(InvalidParameters, match="nest more than 64 levels"):
        parameters.validator({})({"k": deep})


# Fragments that YAML treats specially, to reach the parser's and the loader's corners.
YAMLISH = st.lists(
    st.sampled_from(
        [
            *"ab1 :-[]{},'\"\n\t#&*!|>%@`?\\.~",
            *("\x00", "é", "\ud800", "name: a\n", "runner: shell\n", "runner_config:\n"),
            *("  ", "&x ", "*x", "- ", "<<: ", "!!int ", "!!binary ", "!!set ", "0x1F", "1e9"),
            *(".nan", "{{ x }}", "---\n"),
        ]
    ),
    max_size=60,
).map("".join)
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from([*pack_schema.NAMES, "{{ parameters.x }}", "sh", "-c"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["name", "runner", "runner_config", "policy", "retry", "command", "url", "x"]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    content=YAMLISH
    | JSONISH.map(lambda doc: yaml.safe_dump(doc, allow_unicode=True))
    | st.builds(
        lambda runner, config, extra: yaml.safe_dump(
            {"name": "a", "runner": runner, "runner_config": config, **extra}
        ),
        st.sampled_from(pack_schema.NAMES),
        JSONISH,
        st.dictionaries(st.text(max_size=8), JSONISH, max_size=2),
    )
)
def test_a_random_action_file_loads_or_is_an_invalid_pack(tmp_path: Path, content: str) -> None:
    root = _pack(tmp_path / "fuzz")
    (root / "actions" / "a.yaml").write_text(content, errors="surrogatepass")
    try:
        packs.read_pack(root)
    except InvalidPack:
        pass


def test_parameter_schemas_must_be_usable_as_loaded(tmp_path: Path) -> None:
    # A $ref to nowhere (a 500 at request time before), a remote $ref, a pattern RE2 refuses
    missing = "name: a\nrunner: noop\nparameters:\n  properties:\n    x: {$ref: '#/$defs/no'}\n"
    assert "points at nothing" in _action(tmp_path / "1", missing)
    remote = "name: a\nrunner: noop\nparameters:\n  $ref: 'https://example.org/s.json'\n"
    assert "points at nothing" in _action(tmp_path / "2", remote)
    lookaround = "name: a\nrunner: noop\nparameters:\n  properties:\n    x: {pattern: '(?=a)'}\n"
    assert "RE2 syntax" in _action(tmp_path / "3", lookaround)


def test_a_schema_pattern_cannot_backtrack_on_a_hostile_value() -> None:
    # Python's re took ~50 s for 30 characters against this pattern
    check = parameters.validator({"properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}})
    with pytest.raises(InvalidParameters):
        check({"s": "a" * 5000 + "!"})
    keys = parameters.validator({"patternProperties": {"^(a+)+$": {"type": "integer"}}})
    with pytest.raises(InvalidParameters):
        keys({"a" * 5000: "x"})
    assert keys({"aaa": 1}) == {"aaa": 1}


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    text = (
        "name: a\nrunner: shell\n"
        "runner_config: {command: [echo, hi]}\nrunner_config: {command: [rm]}\n"
    )
    assert "a.yaml:4: 'runner_config' is given twice" in _action(tmp_path, text)


def test_a_list_or_a_mapping_as_a_key_is_refused(tmp_path: Path) -> None:
    # Found by the fuzzing test above: the check for a key given twice hashed the key.
    text = "name: a\nrunner: noop\n? [runner]\n: shell\n"
    assert "a.yaml:3: a key must be a plain value" in _action(tmp_path, text)


@pytest.mark.parametrize(
    ("where", "text", "expected"),
    [
        (
            "rule",
            "parameters:\n  n: '{{ event.payload.n }'\n",
            "r.yaml:5: parameters.n: not a valid template: unexpected '}'",
        ),
        (
            "rule",
            "parameters:\n  n: '{{ payload.n }}'\n",
            "r.yaml:5: parameters.n: the template reads payload, which is not defined here "
            "(known: event)",
        ),
        (
            "action",
            "runner_config:\n  url: 'http://x/{% if parameters.a %}'\n",
            "a.yaml:4: runner_config.url: not a valid template",
        ),
        (
            "action",
            "runner_config:\n  url: 'http://x/{{ params.a }}'\n",
            "a.yaml:4: runner_config.url: the template reads params, which is not defined here "
            "(known: parameters, secrets)",
        ),
    ],
)
def test_a_template_that_cannot_render_is_refused_at_load_with_its_line(
    tmp_path: Path, where: str, text: str, expected: str
) -> None:
    action = "name: a\nrunner: http\n" + (
        text if where == "action" else "runner_config: {url: x}\n"
    )
    rule = "name: r\ntrigger: t\naction: p.a\n" + (text if where == "rule" else "")
    message = _refused(_pack(tmp_path / "p", {"a.yaml": action}, {"r.yaml": rule}))
    assert expected in message


def test_templates_may_read_jinjas_own_globals_and_filters(tmp_path: Path) -> None:
    rule = (
        "name: r\ntrigger: t\naction: p.a\nparameters:\n"
        "  n: '{{ range(3) | list | length + (event.payload.n | int) }}'\n"
    )
    action = "name: a\nrunner: http\nrunner_config: {url: 'http://x/{{ parameters.n }}'}\n"
    spec = packs.read_pack(_pack(tmp_path / "p", {"a.yaml": action}, {"r.yaml": rule}))
    assert [r["name"] for r in spec.rules] == ["r"]
