//! Generated policies at organisation scale (issue 12): `servers` MCP servers and `agents`
//! agents with one public key and `allow` allowances each, written as one TOML file or split
//! over a directory of files. Deterministic: the same `seed` gives the same policy, keys
//! included (each private scalar comes from a seeded RNG and is thrown away after its public
//! point is computed), so the figures in benches/README.md can be reproduced byte for byte.
//!
//! Used by `benches/policygen.rs` (the command) and by `loadgen --pad-agents` (a broker under
//! load with a large policy).

use agent_sts::crypto::{b64url_encode, Alg};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Every generated server offers these; an allowance picks a non-empty subset.
pub const SCOPES: [&str; 4] = ["read", "write", "admin", "audit"];

#[derive(Debug, Clone)]
pub struct Spec {
    pub servers: usize,
    pub agents: usize,
    /// Allowances per agent (distinct servers, at most `servers`).
    pub allow: usize,
    /// Key algorithm of every agent: ES256, ES384 or EdDSA (Ed25519).
    pub alg: Alg,
    pub seed: u64,
    /// Prefix of every id, so that a generated policy can pad another without collisions.
    pub prefix: String,
}

impl Spec {
    pub fn server_id(&self, i: usize) -> String {
        format!("{}srv-{i:05}", self.prefix)
    }

    pub fn agent_id(&self, i: usize) -> String {
        format!("{}agent-{i:06}", self.prefix)
    }
}

/// One public JWK as a TOML inline table, from a private key drawn from `rng`.
fn public_key_toml(alg: Alg, kid: &str, rng: &mut StdRng) -> String {
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::{EcGroup, EcPoint};
    use openssl::nid::Nid;
    match alg {
        Alg::ES256 | Alg::ES384 => {
            let (nid, len, crv) = if alg == Alg::ES256 {
                (Nid::X9_62_PRIME256V1, 32, "P-256")
            } else {
                (Nid::SECP384R1, 48, "P-384")
            };
            let group = EcGroup::from_curve_name(nid).expect("curve");
            let mut ctx = BigNumContext::new().expect("ctx");
            let mut order = BigNum::new().expect("bn");
            group.order(&mut order, &mut ctx).expect("order");
            let d = loop {
                let bytes: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
                let d = BigNum::from_slice(&bytes).expect("bn");
                if d.num_bits() > 0 && d < order {
                    break d;
                }
            };
            let mut q = EcPoint::new(&group).expect("point");
            q.mul_generator2(&group, &d, &mut ctx).expect("d.G");
            let (mut x, mut y) = (BigNum::new().expect("bn"), BigNum::new().expect("bn"));
            q.affine_coordinates(&group, &mut x, &mut y, &mut ctx).expect("affine");
            let pad = |b: &BigNum| b64url_encode(&b.to_vec_padded(len).expect("pad"));
            format!(
                "{{ kty = \"EC\", crv = \"{crv}\", alg = \"{alg}\", use = \"sig\", kid = \"{kid}\", x = \"{}\", y = \"{}\" }}",
                pad(&x),
                pad(&y)
            )
        }
        Alg::EdDSA => {
            let seed: [u8; 32] = rng.random();
            let key = openssl::pkey::PKey::private_key_from_raw_bytes(&seed, openssl::pkey::Id::ED25519)
                .expect("ed25519");
            let x = b64url_encode(&key.raw_public_key().expect("raw"));
            format!("{{ kty = \"OKP\", crv = \"Ed25519\", alg = \"EdDSA\", use = \"sig\", kid = \"{kid}\", x = \"{x}\" }}")
        }
        Alg::RS256 | Alg::PS256 => {
            panic!("the generator makes EC and Ed25519 keys only (RSA keygen is too slow)")
        }
    }
}

fn write_server(out: &mut impl Write, spec: &Spec, i: usize) -> std::io::Result<()> {
    let id = spec.server_id(i);
    let life = if i % 2 == 0 { "max_token_lifetime_secs = 900\n" } else { "" };
    write!(
        out,
        "[[server]]\nid = \"{id}\"\nresource = \"https://{id}.mcp.example/mcp\"\nscopes = [\"read\", \"write\", \"admin\", \"audit\"]\n{life}\n"
    )
}

fn write_agent(out: &mut impl Write, spec: &Spec, i: usize, rng: &mut StdRng) -> std::io::Result<()> {
    let id = spec.agent_id(i);
    let key = public_key_toml(spec.alg, &format!("{id}-k1"), rng);
    write!(out, "[[agent]]\nid = \"{id}\"\nkeys = [{key}]\n")?;
    let mut chosen: Vec<usize> = Vec::with_capacity(spec.allow);
    while chosen.len() < spec.allow.min(spec.servers) {
        let s = rng.random_range(0..spec.servers);
        if !chosen.contains(&s) {
            chosen.push(s);
        }
    }
    for s in chosen {
        // A non-empty subset of the four scopes; the first one is the default.
        let mask = rng.random_range(1..16u8);
        let scopes: Vec<String> = SCOPES
            .iter()
            .enumerate()
            .filter(|(b, _)| mask & (1 << b) != 0)
            .map(|(_, s)| format!("\"{s}\""))
            .collect();
        write!(
            out,
            "\n  [[agent.allow]]\n  server = \"{}\"\n  scopes = [{}]\n  default_scopes = [{}]\n",
            spec.server_id(s),
            scopes.join(", "),
            scopes[0]
        )?;
    }
    writeln!(out)
}

/// The whole policy as one TOML text.
pub fn policy_text(spec: &Spec) -> String {
    let mut out = Vec::new();
    let mut rng = StdRng::seed_from_u64(spec.seed);
    for i in 0..spec.servers {
        write_server(&mut out, spec, i).expect("write to a Vec");
    }
    for i in 0..spec.agents {
        write_agent(&mut out, spec, i, &mut rng).expect("write to a Vec");
    }
    String::from_utf8(out).expect("UTF-8")
}

/// Write the policy as `files` files into `dir` (`policy-0000.toml` …), or, with `files` = 1
/// and `dir` naming a `.toml` file, as that one file. File `j` holds the `j`-th slice of the
/// servers and of the agents; agents reach servers in any file. Returns the paths written.
pub fn write_policy(spec: &Spec, out: &Path, files: usize) -> std::io::Result<Vec<PathBuf>> {
    let files = files.max(1);
    let paths: Vec<PathBuf> = if files == 1 && out.extension().is_some_and(|e| e == "toml") {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        vec![out.to_path_buf()]
    } else {
        std::fs::create_dir_all(out)?;
        (0..files).map(|j| out.join(format!("policy-{j:04}.toml"))).collect()
    };
    let mut rng = StdRng::seed_from_u64(spec.seed);
    for (j, path) in paths.iter().enumerate() {
        let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(
            w,
            "# Generated by benches/policygen.rs: {} servers, {} agents x {} allowances, {} keys, seed {}, file {} of {}.\n",
            spec.servers,
            spec.agents,
            spec.allow,
            spec.alg,
            spec.seed,
            j + 1,
            files
        )?;
        for i in (j * spec.servers / files)..((j + 1) * spec.servers / files) {
            write_server(&mut w, spec, i)?;
        }
        for i in (j * spec.agents / files)..((j + 1) * spec.agents / files) {
            write_agent(&mut w, spec, i, &mut rng)?;
        }
        w.flush()?;
    }
    Ok(paths)
}
