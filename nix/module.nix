# services.hivegen: hivegen on a NixOS host.
#
# `settings` is hive.toml, key for key (see README.md, "Configuration"): every key hivegen
# reads is an option here with hivegen's own default, and a key hivegen does not know is
# an evaluation error, as it is hivegen's loader error. The file is rendered in Nix
# (lib.generators.toINI with builtins.toJSON values: TOML reads the strings as basic
# strings and the numbers as numbers, see `seconds` for floats), so its text is known at
# evaluation time and needs no build step.
{ config, lib, ... }:

let
  cfg = config.services.hivegen;
  inherit (lib) mkOption types;

  # The value rules of hivegen/config.py and hivegen/names.py, as POSIX regular
  # expressions (builtins.match matches the whole string, byte by byte) and checks.
  # tests/test_nixos_module.py feeds the same good and bad values to both and checks
  # that they agree.
  rule =
    description: regex: check:
    types.addCheck (types.strMatching regex) check // { inherit description; };
  anyString = _: true;
  # No control character but tab, newline and carriage return (they are escaped).
  nixText = "([^[:cntrl:]]|[\t\n\r])*";
  path = rule "absolute path of letters, digits and . _ + - / (no . or .. component)"
    "/[A-Za-z0-9._+/-]*"
    (s: !(lib.elem ".." (lib.splitString "/" s)) && !(lib.elem "." (lib.splitString "/" s)));
  port = types.ints.between 1 65535;
  memory = rule "memory limit (like 512M, 2G, 50% or infinity)"
    "([1-9][0-9]{0,17}[KMGT]?|([1-9][0-9]?|100)%|infinity)" anyString;
  cpu = rule "CPU quota (a percentage like 50% or 200%)" "[1-9][0-9]{0,5}%" anyString;
  managerName = rule "manager name (a lowercase letter, then up to 10 of a-z 0-9 -; not h-...)"
    "[a-z][a-z0-9-]{0,10}" (s: !lib.hasPrefix "h-" s);
  flakeRef = rule "flake reference (no spaces or control characters, not starting with -)"
    "[^-[:space:][:cntrl:]][^[:space:][:cntrl:]]*" anyString;
  text = rule "string without control characters but tab, newline and carriage return"
    nixText anyString;
  gitName = rule "git name (not blank, no < or >)" "([^[:cntrl:]<>]|[\t\n\r])*"
    (s: builtins.match "[[:space:]]*" s == null);
  gitEmail = rule "git email (no spaces, < or >)" "[^[:space:][:cntrl:]<>]+" anyString;
  # [health]: hivegen/config.py's _seconds, an integer or float from 0 to
  # MAX_HEALTH_SECONDS. The file is rendered with builtins.toJSON, which in Nix 2.8 prints
  # a float with 6 significant digits (0.123456789 as 0.123457, 3.0 as 3): a float that
  # would not be read back as the same number is refused here rather than changed.
  # Known gap: hivegen takes any float in range, so with such a Nix the module is stricter
  # for floats of more than 6 significant digits (a Nix that prints floats exactly takes
  # them all).
  maxHealthSeconds = 3600;
  seconds =
    types.addCheck (types.numbers.between 0 maxHealthSeconds) (
      x: builtins.fromJSON (builtins.toJSON x) == x
    )
    // {
      description = "number of seconds from 0 to ${toString maxHealthSeconds} (an integer, or a float that renders exactly: at most 6 significant digits with Nix 2.8)";
    };
  # hivegen/config.py's _ip_address, Python's ipaddress.ip_address: IPv4 as four decimal
  # octets without leading zeros, IPv6 by RFC 3986's grammar (one "::" standing for at
  # least one group, an IPv4 tail only at the end), which is what ipaddress accepts
  # (checked against it by tests/test_nixos_module.py's SAMPLES).
  # hivegen normalises what it reads ("FE80:0::1" is fe80::1); the file keeps it as given.
  # Known gap: Python takes any scope ID without % or / (fe80::1%eth0); this one must also
  # have no ASCII space or control character (no interface name has one), so the module is
  # the stricter of the two there.
  decOctet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
  ipv4 = "${decOctet}([.]${decOctet}){3}";
  h16 = "[0-9A-Fa-f]{1,4}";
  ls32 = "(${h16}:${h16}|${ipv4})";
  # n( h16 ":" ), and [ *n( h16 ":" ) h16 ] of RFC 3986.
  groups = n: "(${h16}:){${toString n}}";
  upTo = n: if n == 0 then "(${h16})?" else "((${h16}:){0,${toString n}}${h16})?";
  ipv6 = lib.concatStringsSep "|" [
    "${groups 6}${ls32}"
    "::${groups 5}${ls32}"
    "${upTo 0}::${groups 4}${ls32}"
    "${upTo 1}::${groups 3}${ls32}"
    "${upTo 2}::${groups 2}${ls32}"
    "${upTo 3}::${h16}:${ls32}"
    "${upTo 4}::${ls32}"
    "${upTo 5}::${h16}"
    "${upTo 6}::"
  ];
  ipAddress = rule "IP address (IPv4 like 127.0.0.1 or IPv6 like ::1)"
    "${ipv4}|(${ipv6})(%[^%/[:space:][:cntrl:]]+)?" anyString;
  validAgentName =
    name: name == cfg.settings.hive.manager || builtins.match "[a-z][a-z0-9-]{0,8}" name != null;

  option =
    type: default: description:
    mkOption { inherit type default description; };

  limitsOptions = nullable: {
    memory_max =
      option (if nullable then types.nullOr memory else memory) (if nullable then null else "2G")
        "systemd MemoryMax= of the container";
    cpu_quota =
      option (if nullable then types.nullOr cpu else cpu) (if nullable then null else "50%")
        "systemd CPUQuota= of the container";
  };

  # [agents.<n>]: what hivegen/config.py's AGENT_KEYS holds besides the limits.
  agentHealthOptions = {
    health_settle =
      option (types.nullOr seconds) null
        "This agent's [health] settle (null: the hive's).";
    health_port_timeout =
      option (types.nullOr seconds) null
        "This agent's [health] port_timeout (null: the hive's).";
  };

  settingsType = types.submodule {
    options = {
      hive = mkOption {
        default = { };
        description = "The hive: where it lives and who it is.";
        type = types.submodule {
          options = {
            state_root = option path "/var/lib/hyperhive" "Where hivegen keeps repos, notes and credentials.";
            hyperhive_flake =
              option flakeRef "git+https://example.org/hyperhive"
                "Flake with nixosConfigurations.agent-base and .manager.";
            manager = option managerName "hm1nd" "The manager agent's name (its container has no h- prefix).";
            manager_port = option port 8000 "The manager's web UI port.";
            dashboard_port = option port 7000 "HIVE_DASHBOARD_PORT in every agent.";
            operator_pronouns = option text "they/them" "HIVE_OPERATOR_PRONOUNS in every agent.";
            committer_name = option gitName "c0re" "git committer name of hivegen's commits.";
            committer_email = option gitEmail "c0re@hyperhive" "git committer email of hivegen's commits.";
          };
        };
      };
      host = mkOption {
        default = { };
        description = "Where the host keeps containers, drop-ins and runtime dirs.";
        type = types.submodule {
          options = {
            containers_conf_dir = option path "/etc/nixos-containers" "Where nixos-container keeps <c>.conf.";
            systemd_dir = option path "/etc/systemd/system.control" "Where the limits drop-ins go.";
            runtime_root = option path "/run/hyperhive" "Per-agent runtime dirs (bound at /run/hive).";
            runtime = option (types.enum [
              "native"
              "simulated"
            ]) "native" "native on NixOS; simulated only for demos and tests.";
            simulated_root = option path "/var/lib/hivegen-simhost" "The simulated host's state.";
          };
        };
      };
      limits = mkOption {
        default = { };
        description = "Default limits of every container.";
        type = types.submodule { options = limitsOptions false; };
      };
      health = mkOption {
        default = { };
        description = "When a started agent counts as up.";
        type = types.submodule {
          options = {
            settle = option seconds 3 "Seconds the agent's unit must stay active after a start.";
            port_timeout =
              option seconds 60
                "Seconds for the agent's web port to accept a TCP connection at address (0: not checked).";
            address = option ipAddress "127.0.0.1" "Where the agents' web ports are checked.";
          };
        };
      };
      agents = mkOption {
        default = { };
        description = "Per-agent limit and health overrides, by agent name.";
        type = types.attrsOf (types.submodule { options = limitsOptions true // agentHealthOptions; });
      };
    };
  };

  # [agents.<n>] holds only the keys that are set: null means "the hive's default".
  sections =
    {
      inherit (cfg.settings) hive host limits health;
    }
    // lib.mapAttrs' (
      name: entry: lib.nameValuePair "agents.${name}" (lib.filterAttrs (_: v: v != null) entry)
    ) cfg.settings.agents;

  hiveToml = lib.generators.toINI {
    mkKeyValue = key: value: "${key} = ${builtins.toJSON value}";
  } sections;

  state = cfg.settings.hive.state_root;
  # The socket named, not derived: hivegen's default sits beside the runtime root, which
  # is /run/hivegen only while runtime_root is directly under /run.
  serveArgs =
    [ "--socket" "/run/hivegen/dashboard.sock" ]
    ++ lib.optionals (cfg.serve.listen != null) [ "--listen" cfg.serve.listen ]
    ++ lib.concatMap (host: [ "--allow-host" host ]) cfg.serve.allowedHosts;
  # hivegen/layout.py's TOP_DIRS: credentials are never readable by others.
  stateDirs = {
    agents = "0755";
    notes = "0755";
    credentials = "0700";
    applied = "0755";
    meta = "0755";
    shared = "0755";
  };
in
{
  options.services.hivegen = {
    enable = lib.mkEnableOption "hivegen, which runs a hive of AI agents in NixOS containers";

    package = mkOption {
      type = types.package;
      description = "The hivegen package (the flake's nixosModules.default sets it).";
    };

    settings = mkOption {
      type = settingsType;
      default = { };
      description = "hive.toml, rendered to /etc/hivegen/hive.toml.";
    };

    reconcile = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run `hivegen reconcile` at boot (hivegen-reconcile.service): settle interrupted
          work and start exactly the agents that were wanted running.
        '';
      };
      timeout = mkOption {
        type = types.str;
        default = "15min";
        description = ''
          TimeoutStartSec= of hivegen-reconcile.service: boot never waits longer for it
          (a container whose system is missing is built first). A reconcile stopped by
          the timeout is finished by running it again.
        '';
      };
    };

    serve = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Run `hivegen serve` (hivegen-serve.service): a request socket in every agent's
          runtime dir and the operator's dashboard on a root-only unix socket.
        '';
      };
      listen = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "127.0.0.1:7000";
        description = ''
          HOST:PORT to also serve the dashboard on TCP (`--listen`), behind the token in
          <state_root>/dashboard.token. Every agent can reach it: see the unit's comment.
        '';
      };
      allowedHosts = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "hive.example.org" ];
        description = ''
          Host names the dashboard answers to besides localhost and the listen address
          (`--allow-host`, a Host header check against DNS rebinding).
        '';
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = config.boot.enableContainers;
        message = "services.hivegen needs boot.enableContainers = true: hivegen drives nixos-container and container@.service.";
      }
    ]
    ++ map (name: {
      assertion = validAgentName name;
      message = "services.hivegen.settings.agents.${builtins.toJSON name}: invalid agent name (a lowercase letter, then up to 8 of a-z 0-9 -; or the manager's name)";
    }) (builtins.attrNames cfg.settings.agents);

    # On the operator's PATH, with its completions and hivegen(1): NixOS links every system
    # package's share/bash-completion, share/zsh, share/fish and share/man (the shells'
    # completion and documentation.man options, on by default).
    environment.systemPackages = [ cfg.package ];
    environment.etc."hivegen/hive.toml".text = hiveToml;

    systemd.tmpfiles.rules = [
      "d ${state} 0755 root root -"
      "d ${cfg.settings.host.runtime_root} 0755 root root -"
    ] ++ lib.mapAttrsToList (dir: mode: "d ${state}/${dir} ${mode} root root -") stateDirs;

    systemd.services.hivegen-reconcile = lib.mkIf cfg.reconcile.enable {
      description = "hivegen: start the agents that should run";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [
        "network-online.target"
        "nix-daemon.socket"
        "nix-daemon.service"
        "systemd-tmpfiles-setup.service"
      ];
      # Not Before=multi-user.target: a login must not wait for containers to build.
      # Units that need the agents order themselves After=hivegen-reconcile.service.
      restartIfChanged = false;
      # The system's nix (the one nix-daemon runs), nixos-container and systemctl first;
      # the package's wrapper only appends its own git and nix as a fallback.
      path = [ "/run/current-system/sw" ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${lib.getExe cfg.package} reconcile";
        TimeoutStartSec = cfg.reconcile.timeout;
      };
    };

    # The dashboard listens on a unix socket only root can open, /run/hivegen/dashboard.sock
    # (beside the default runtime root /run/hyperhive); reach it from elsewhere with
    #   ssh -L 7000:/run/hivegen/dashboard.sock host   (then http://localhost:7000).
    # The agents share the host's network namespace (PRIVATE_NETWORK=0), so a TCP
    # listener (`serve.listen`), even on 127.0.0.1, is reachable from every agent: it is
    # protected by the token in <state_root>/dashboard.token (made 0600 if missing).
    systemd.services.hivegen-serve = lib.mkIf cfg.serve.enable {
      description = "hivegen: the agents' request sockets and the operator's dashboard";
      wantedBy = [ "multi-user.target" ];
      after = [
        "hivegen-reconcile.service"
        "nix-daemon.socket"
        "systemd-tmpfiles-setup.service"
      ];
      # As hivegen-reconcile: the system's nix, nixos-container and systemctl first.
      path = [ "/run/current-system/sw" ];
      serviceConfig = {
        # hivegen sends READY=1 to $NOTIFY_SOCKET itself once it listens.
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = "${lib.getExe cfg.package} serve ${lib.escapeShellArgs serveArgs}";
        Restart = "on-failure";
        RestartSec = "2s";
        # /run/hivegen, root's alone: where the dashboard's socket is.
        RuntimeDirectory = "hivegen";
        RuntimeDirectoryMode = "0700";
        # Room for every agent's bounded connections (hivegen sizes its agents' pool
        # from this limit, less a reserve for the dashboards, git and nix).
        LimitNOFILE = 65536;
      };
    };
  };
}
