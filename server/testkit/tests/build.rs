//! The test fixtures against the real engine and toolchain.

use std::process::Command;

use lattice_testkit::{docker, images, lifecycles};

#[test]
fn lattice_init_is_built_static() {
    let dir = lifecycles::build_static();
    let init = dir.join("lattice-init");
    let output = Command::new("ldd")
        .arg(&init)
        .output()
        .expect("ldd is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("not a dynamic executable") || text.contains("statically linked"),
        "ldd says: {text}"
    );
    // A second call in the same process reuses the build.
    assert_eq!(lifecycles::build_static(), dir);
}

#[tokio::test]
async fn busybox_image_is_imported_once_and_runs() {
    let rootfs = images::busybox_image().await;
    assert_eq!(rootfs, images::BUSYBOX_ROOTFS);
    let engine = docker::connect().await;
    assert!(images::image_exists(&engine, images::BUSYBOX_IMAGE).await);
    // Idempotent: an existing tag is kept.
    images::ensure_busybox_image(&engine)
        .await
        .expect("image exists");
    assert_eq!(images::busybox_image().await, rootfs);
}

#[tokio::test]
async fn owner_guard_removes_its_containers() {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::CreateContainerOptionsBuilder;

    images::busybox_image().await;
    let engine = docker::connect().await;
    let guard = docker::OwnerGuard::new("testkit");
    let owner = guard.owner().to_string();
    let name = format!("{owner}-c");
    let body = ContainerCreateBody {
        image: Some(images::BUSYBOX_IMAGE.to_string()),
        cmd: Some(vec!["true".to_string()]),
        labels: Some(guard.properties().into_iter().collect()),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    engine
        .create_container(Some(options), body)
        .await
        .expect("create");
    assert!(engine.inspect_container(&name, None).await.is_ok());
    drop(guard);
    let gone = engine.inspect_container(&name, None).await;
    assert!(gone.is_err(), "container {name} outlived its guard");
    assert_eq!(
        docker::remove_containers_by_label(&engine, &owner)
            .await
            .expect("list"),
        0
    );
}
