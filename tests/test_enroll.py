"""The enrollment script ``saltmarsh host enroll`` prints (master/agents/enroll.py): valid sh, its agent.yaml exact.

It is run for real on a fresh container in tests/integration/test_enroll_container.py.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from saltmarsh.master.agents.enroll import Enrollment, agent_yaml, script

ENROLLMENT = Enrollment(agent_id="hv9", master_address="master.example", publish_port=4605, request_port=4606,
                        master_key="bWFzdGVy", token="tok'en\"$(id)", expires="2026-12-02 07:00:00",
                        wheels="/root/saltmarsh-wheels", agent_unit="[Unit]\nDescription=a\n",
                        helper_unit="[Unit]\nDescription=b\n")


@pytest.mark.timeout(30)
def test_the_script_is_valid_sh_and_its_agent_yaml_says_exactly_what_was_issued() -> None:
    text = script(ENROLLMENT)
    subprocess.run(["sh", "-n"], input=text, text=True, check=True, timeout=10)
    assert yaml.safe_load(agent_yaml(ENROLLMENT)) == {
        "id": "hv9", "master": "master.example", "publish_port": 4605, "request_port": 4606,
        "master_key": "bWFzdGVy", "join_token": "tok'en\"$(id)"}
    # Every file comes from a quoted here-document: nothing in it is expanded by the host's shell.
    assert text.count("<<'SALTMARSH_EOF'") == 3
    assert re.search(r"systemctl enable --now saltmarsh-setup-helper.service saltmarsh-agent.service", text)


@pytest.mark.timeout(30)
def test_a_file_holding_the_here_document_marker_is_refused() -> None:
    import dataclasses

    with pytest.raises(ValueError, match="end marker"):
        script(dataclasses.replace(ENROLLMENT, agent_unit="x\nSALTMARSH_EOF\nrm -rf /\n"))
