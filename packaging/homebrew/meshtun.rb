# Homebrew formula for the meshtun daemon, built from source.
#
#   brew install --build-from-source packaging/homebrew/meshtun.rb
#   sudo brew services start meshtun     # runs `meshtun up` under launchd, as root
#
# The service reads #{HOMEBREW_PREFIX}/etc/meshtun/meshtun.toml; see the caveats below.
class Meshtun < Formula
  desc "Userspace WireGuard daemon with membership gating; a replacement for wg-quick"
  homepage "https://github.com/meshtun/meshtun"
  url "https://github.com/meshtun/meshtun.git",
      tag: "v0.1.0"
  license "Apache-2.0"
  head "https://github.com/meshtun/meshtun.git", branch: "main"

  depends_on "rust" => :build

  def install
    system "cargo", "install", *std_cargo_args(path: "meshtun")

    # Man pages and bash, zsh and fish completions, generated from the command-line definitions.
    generated = buildpath/"generated"
    system "cargo", "run", "--release", "--locked", "-p", "meshtun-docgen", "--", generated
    man1.install Dir[generated/"meshtun/man/man1/*.1"]
    bash_completion.install generated/"meshtun/completions/meshtun.bash" => "meshtun"
    zsh_completion.install generated/"meshtun/completions/_meshtun"
    fish_completion.install generated/"meshtun/completions/meshtun.fish"

    # The Grafana dashboard and the Prometheus alert rules (with their promtool tests).
    (pkgshare/"monitoring").install Dir["packaging/monitoring/*"]

    # The example configuration; Homebrew keeps an edited copy across upgrades.
    (etc/"meshtun").install "packaging/examples/example.toml"
  end

  def post_install
    # Runtime state (pid and host-setup files): macOS has no /run, meshtun's default.
    (var/"run/meshtun").mkpath
    # The configuration holds (or names) a private key: readable by its owner only.
    Dir[etc/"meshtun/*.toml"].each { |file| chmod 0600, file }
  end

  def caveats
    <<~EOS
      Write #{etc}/meshtun/meshtun.toml (start from #{etc}/meshtun/example.toml) with
      `name = "utun"` in [interface]: macOS names the tunnel itself (utun0, utun1, ...).
      Create its key as root:
        sudo sh -c 'umask 077; #{opt_bin}/meshtun genkey > #{etc}/meshtun/wg0.key'
      then start the service as root (it creates the tunnel and routes):
        sudo brew services start meshtun
      The service keeps its state in #{var}/run/meshtun: pass the same directory to
      `meshtun down` and `meshtun show` with --state-dir or MESHTUN_STATE_DIR.
    EOS
  end

  service do
    run [opt_bin/"meshtun", "up", "--state-dir", var/"run/meshtun", etc/"meshtun/meshtun.toml"]
    # Creating a utun device, its addresses and routes needs root.
    require_root true
    keep_alive true
    log_path var/"log/meshtun.log"
    error_log_path var/"log/meshtun.log"
  end

  test do
    assert_match "meshtun #{version}", shell_output("#{bin}/meshtun --version")
    # Key generation works without privileges: a private key gives a 44-character public key.
    private_key = shell_output("#{bin}/meshtun genkey")
    public_key = pipe_output("#{bin}/meshtun pubkey", private_key)
    assert_equal 44, public_key.strip.length
  end
end
