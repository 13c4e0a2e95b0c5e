// The Doorstep Android library: the Rust core (doorstep-core) cross-built with cargo-ndk,
// its uniffi-generated Kotlin bindings, and a thin Kotlin layer. A self-contained build: open
// this folder in Android Studio, or run `gradle wrapper` here once (see README.md).

pluginManagement {
    repositories {
        google {
            content {
                includeGroupByRegex("com\\.android.*")
                includeGroupByRegex("com\\.google.*")
                includeGroupByRegex("androidx.*")
            }
        }
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode = RepositoriesMode.FAIL_ON_PROJECT_REPOS
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "doorstep-android"
