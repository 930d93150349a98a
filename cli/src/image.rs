//! Docker image references as users type them (`busybox`, `org/app:1.2`,
//! `registry:5000/app:tag`) and the rootfs URLs of the API
//! (`docker:///busybox`, `docker://registry:5000/app#tag`).
//!
//! The reference grammar is Docker's: the first path component is a registry
//! only if it contains `.` or `:` or is `localhost`, and a tag follows the
//! last `:` after the last `/`.

/// An image reference ltc cannot turn into a rootfs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image {image:?}: {reason}")]
pub struct InvalidImage {
    pub image: String,
    pub reason: String,
}

/// The rootfs URL of `image`; a `docker://` URL is taken as it is.
///
/// # Errors
/// [`InvalidImage`] naming the rule the reference breaks.
pub fn rootfs_for_image(image: &str) -> Result<String, InvalidImage> {
    let invalid = |reason: &str| InvalidImage {
        image: image.to_string(),
        reason: reason.to_string(),
    };
    if image.starts_with("docker://") {
        lattice_models::validation::validate_rootfs("rootfs", image)
            .map_err(|e| invalid(&e.message))?;
        return Ok(image.to_string());
    }
    if image.contains("://") {
        return Err(invalid(
            "only Docker images (or docker:// URLs) are supported",
        ));
    }
    if image.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if image.contains('@') {
        return Err(invalid("digests are not supported; name a tag instead"));
    }
    let (name, tag) = split_tag(image);
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(invalid(
                "a tag is 1 to 128 letters, digits, '_', '.' or '-'",
            ));
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let registry = match components.as_slice() {
        [first, _, ..] if is_registry(first) => Some(components.remove(0)),
        _ => None,
    };
    if let Some(registry) = registry {
        let (host, port) = match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !host_ok || !port_ok {
            return Err(invalid("a registry is HOST or HOST:PORT"));
        }
    }
    for component in &components {
        if component.is_empty() {
            return Err(invalid("the repository has an empty path component"));
        }
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository names must be lowercase"));
        }
        let ok = component
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(invalid(
                "a repository holds lowercase letters, digits, '.', '_', '-' and '/'",
            ));
        }
    }
    let path = components.join("/");
    let tag = tag.map(|t| format!("#{t}")).unwrap_or_default();
    Ok(match registry {
        Some(registry) => format!("docker://{registry}/{path}{tag}"),
        None => format!("docker:///{path}{tag}"),
    })
}

/// How a user would write the image of `rootfs`: the inverse of
/// [`rootfs_for_image`]; other rootfs URLs are shown as they are.
pub fn image_for_rootfs(rootfs: &str) -> String {
    let Some(rest) = rootfs.strip_prefix("docker://") else {
        return rootfs.to_string();
    };
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    match rest.split_once('#') {
        Some((name, tag)) => format!("{name}:{tag}"),
        None => rest.to_string(),
    }
}

/// `(name, tag)`: the tag follows the last `:` that comes after the last
/// `/`, so that `host:5000/repo` has no tag.
fn split_tag(image: &str) -> (&str, Option<&str>) {
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], Some(&image[last_slash + i + 1..])),
        None => (image, None),
    }
}

fn is_registry(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_become_rootfs_urls() {
        for (image, rootfs) in [
            ("busybox", "docker:///busybox"),
            ("busybox:1.36", "docker:///busybox#1.36"),
            ("library/busybox", "docker:///library/busybox"),
            ("org/app:v1.2-rc_3", "docker:///org/app#v1.2-rc_3"),
            ("a/b/c:t", "docker:///a/b/c#t"),
            ("host:5000/repo:tag", "docker://host:5000/repo#tag"),
            ("host:5000/repo", "docker://host:5000/repo"),
            (
                "registry.example.com/org/app",
                "docker://registry.example.com/org/app",
            ),
            ("localhost/app:1", "docker://localhost/app#1"),
            ("docker:///busybox#1", "docker:///busybox#1"),
        ] {
            assert_eq!(rootfs_for_image(image).as_deref(), Ok(rootfs), "{image}");
            if !image.starts_with("docker:") {
                assert_eq!(image_for_rootfs(rootfs), image, "{rootfs}");
            }
        }
    }

    #[test]
    fn bad_images_say_why() {
        for (image, reason) in [
            ("", "must not be empty"),
            ("Busybox", "lowercase"),
            ("busybox:", "a tag is"),
            ("busybox:a/b", "a registry is"),
            ("org//app", "empty path component"),
            ("app@sha256:abc", "digests"),
            ("busy box", "lowercase letters"),
            ("busybox:t#x", "a tag is"),
            ("http://x/y", "only Docker images"),
            ("docker:///", "names no image"),
            ("ho_st:5000/repo", "a registry is"),
        ] {
            let err = rootfs_for_image(image).unwrap_err();
            assert!(err.to_string().contains(reason), "{image:?}: {err}");
            assert!(err.to_string().starts_with("invalid image"), "{err}");
        }
    }

    #[test]
    fn other_rootfs_are_shown_as_they_are() {
        assert_eq!(
            image_for_rootfs("preloaded://cflinuxfs4"),
            "preloaded://cflinuxfs4"
        );
    }
}
