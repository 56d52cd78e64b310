# Homebrew formula for localq: a Python virtualenv formula.
#
# Before publishing it in a tap:
#   1. point `url` at the release's source archive on PyPI and set `sha256`
#      (`shasum -a 256 localq-X.Y.Z.tar.gz`);
#   2. run `brew update-python-resources localq` to write one `resource` block
#      per Python dependency (textual, rich, click, ... and, for the extras below,
#      llama-cpp-python, starlette, uvicorn);
#   3. `brew install --build-from-source ./localq.rb && brew test localq && brew audit --strict localq`.
class Localq < Formula
  include Language::Python::Virtualenv

  desc "Desktop manager for local language models: probe, recommend, pull, chat, serve"
  homepage "https://pypi.org/project/localq/"
  url "https://files.pythonhosted.org/packages/source/l/localq/localq-0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license "Apache-2.0"

  depends_on "cmake" => :build   # llama-cpp-python compiles llama.cpp
  depends_on "python@3.12"

  # Resource blocks go here (step 2 above). The llamacpp and serve extras are
  # part of the formula: a Homebrew user expects `localq chat` and
  # `brew services start localq` to work.

  def install
    virtualenv_install_with_resources
    generate_completions_from_executable(bin/"localq", shell_parameter_format: :click)
  end

  service do
    run [opt_bin/"localq", "serve"]
    keep_alive true
    log_path var/"log/localq-serve.log"
    error_log_path var/"log/localq-serve.log"
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/localq --version")
    ENV["LOCALQ_HOME"] = testpath
    assert_match "smollm2", shell_output("#{bin}/localq catalog")
    system bin/"localq", "probe", "--json"
  end
end
