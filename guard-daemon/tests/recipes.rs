//! The deployment recipes of the README (`docs/recipes/*.toml`): each passes `guard config check`
//! with the real binary, and the README shows each file as it is, so that no recipe names a key
//! guard does not have.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The recipes the README's "Deployment recipes" section walks through.
const RECIPES: [&str; 4] = [
    "https-tap.toml",
    "https-inline-proxy.toml",
    "https-forward-auth.toml",
    "behind-lb.toml",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `guard config check FILE`: its exit status and what it printed (stdout, then stderr).
fn config_check(file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_guard"))
        .args(["config", "check"])
        .arg(file)
        .env("GUARD_LOG", "off")
        .output()
        .expect("the guard binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_recipe_passes_config_check() {
    let dir = root().join("docs/recipes");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut expected: Vec<String> = RECIPES.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(
        found, expected,
        "docs/recipes holds exactly the README's recipes"
    );
    for name in RECIPES {
        let file = dir.join(name);
        let (ok, text) = config_check(&file);
        assert!(ok, "{name}: {text}");
        assert_eq!(text.trim(), format!("{}: ok", file.display()), "{name}");
    }
}

#[test]
fn the_readme_shows_each_recipe_as_it_is() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for name in RECIPES {
        let text = std::fs::read_to_string(root().join("docs/recipes").join(name)).unwrap();
        assert!(
            readme.contains(&format!("```toml\n{text}```")),
            "the README does not show docs/recipes/{name} verbatim in a toml block"
        );
    }
}

/// The check is not a formality: a key guard does not have (the tap has no interface list of its
/// own) fails it, naming the key and the line.
#[test]
fn config_check_refuses_a_key_that_does_not_exist() {
    let dir = std::env::temp_dir().join(format!("guard-recipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[tap]\nhttp_ports = [8000]\ninterfaces = [\"lo\"]\n").unwrap();
    let (ok, text) = config_check(&file);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!ok, "{text}");
    assert!(
        text.contains("interfaces") && text.contains("line 3"),
        "{text}"
    );
}
